"""Dialer: finds peers of a namespace through the DHT only, connects, sends numbered
messages ("Hello from dialer! Message #N") and reports the replies."""

from __future__ import annotations

import argparse
import math

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from punch_net import events as ev
from punch_net.api import NoCandidates, NodeError
from punch_net.config import NodeConfig
from punch_net.flag_types import positive, positive_int
from punch_net.node import Node
from punch_net.routing.selection import Selector

DISCOVERY_MIN_WAIT = 0.25
DISCOVERY_MAX_WAIT = 5.0


async def discover_and_connect(node: Node, namespace: str, peers: dict[ID, None],
                               found: trio.Event) -> None:
    """Keep looking up the namespace; connect to every new provider as soon as a lookup
    names it (a lookup can take its whole timeout when a DHT peer is silent)."""
    await node.bootstrapped.wait()
    wait = DISCOVERY_MIN_WAIT
    dialing: set[ID] = set()

    async def connect(info: PeerInfo) -> None:
        try:
            await node.connect_peer(info)
        except NodeError as exc:
            # a listener that quit stays in the DHT for a while: say so once, then rarely
            node.peer_failed(str(info.peer_id), str(exc), "discovery")
            return
        finally:
            dialing.discard(info.peer_id)
        node.peer_ok(str(info.peer_id))
        peers[info.peer_id] = None
        found.set()

    while True:
        async with trio.open_nursery() as nursery:
            def offer(info: PeerInfo) -> None:
                if info.peer_id not in peers and info.peer_id not in dialing:
                    dialing.add(info.peer_id)
                    nursery.start_soon(connect, info)

            await node.find_peers(namespace, on_peer=offer)
        wait = DISCOVERY_MAX_WAIT if peers else min(wait * 2, DISCOVERY_MAX_WAIT)
        await trio.sleep(wait)


async def run_dialer(node: Node, selector: Selector) -> int:
    cfg = node.config
    peers: dict[ID, None] = {}
    found = trio.Event()
    replies = 0
    deadline = trio.current_time() + cfg.timeout if cfg.count else math.inf

    async def send_one(peer: ID, number: int) -> None:
        nonlocal replies
        text = f"{cfg.message} Message #{number}"
        try:
            resp = await node.request(peer, "message", {"text": text})
        except NodeError as exc:
            node.peer_failed(str(peer), str(exc), "dialer")
            if not node.host.get_network().get_connections(peer):
                peers.pop(peer, None)
            return
        node.peer_ok(str(peer))
        if resp.ok:
            replies += 1

    if cfg.weighted:
        return await run_weighted(node, selector)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(discover_and_connect, node, cfg.namespace, peers, found)
        number = 0
        with trio.move_on_at(deadline):
            await found.wait()
            while not (cfg.count and replies >= cfg.count):
                number += 1
                async with trio.open_nursery() as senders:
                    for peer in list(peers):
                        senders.start_soon(send_one, peer, number)
                if cfg.count and replies >= cfg.count:
                    break
                await trio.sleep(cfg.interval)
        nursery.cancel_scope.cancel()
    if cfg.count and replies < cfg.count:
        node.bus.publish(ev.ErrorEvent(
            message=f"got {replies} of {cfg.count} replies within {cfg.timeout:g}s",
            where="dialer"))
        return 1
    return 0


async def run_weighted(node: Node, selector: Selector) -> int:
    """--weighted: each message goes to ONE node of the namespace, picked by weighted score
    (punch_net/routing/selection.py), failing over to the next on error; prints a `routed` event."""
    cfg = node.config
    await node.bootstrapped.wait()
    replies = number = 0
    with trio.move_on_after(cfg.timeout if cfg.count else math.inf):
        while not (cfg.count and replies >= cfg.count):
            number += 1
            try:
                await selector.send_to_best(cfg.namespace, "message", {"text": f"{cfg.message} Message #{number}"})
                replies += 1
            except NoCandidates as exc:
                node.bus.publish(ev.ErrorEvent(message=str(exc), where="dialer"))
            except NodeError as exc:
                node.bus.publish(ev.ErrorEvent(message=str(exc), where="dialer"))
            if not (cfg.count and replies >= cfg.count):
                await trio.sleep(cfg.interval)
    if cfg.count and replies < cfg.count:
        node.bus.publish(ev.ErrorEvent(
            message=f"got {replies} of {cfg.count} replies within {cfg.timeout:g}s", where="dialer"))
        return 1
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:

    d = parser.add_argument_group("dialer")
    d.add_argument("--message", help="text to send (default 'Hello from dialer!')")
    d.add_argument("--count", type=positive_int,
                   help="exit 0 after N replies (1 if they do not come within --timeout)")
    d.add_argument("--interval", type=positive, help="seconds between messages (2)")
    d.add_argument("--timeout", type=positive, help="seconds to wait with --count (30)")
    d.add_argument("--weighted", action="store_true",
                   help="send each message to one node picked by weighted score (with failover) "
                        "instead of to every node")


def configure(cfg: NodeConfig, args: argparse.Namespace) -> None:
    if getattr(args, "weighted", False):
        cfg.weighted = True
    for name in ("message", "count", "interval", "timeout"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
