"""A dialer (and P2PClient.connect_to_peer) connects to a provider as soon as a DHT answer names it, on real in-process
nodes over 127.0.0.1, while a silent peer (a TCP port that accepts and never speaks) sits
among the closest peers of its lookup and holds the lookup for its dial deadline."""

from __future__ import annotations

from pathlib import Path

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr
from punch_harness import silent_port

from punch_net.client import P2PClient
from punch_net.config import NodeConfig
from punch_net.node import Node
from punch_net.p2p.identity import new_identity
from punch_net.roles.dialer import discover_and_connect

DIAL_TIMEOUT = 8.0


def config(role: str, tmp: Path, **kw: object) -> NodeConfig:
    cfg = NodeConfig(role=role, listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True,
                     data_dir=tmp / f"data-{role}", dial_timeout=DIAL_TIMEOUT)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


async def network(nursery: trio.Nursery, tmp: Path, namespace: str) -> tuple[Node, Node, Multiaddr]:
    """A bootstrap node, a listener announced under `namespace`, and a silent TCP port."""
    silent_addr = await silent_port(nursery)
    boot = Node(config("server", tmp))
    await nursery.start(boot.run)
    listener = Node(config("listener", tmp, bootstrap=[boot.listen_addrs()[0]]))
    await nursery.start(listener.run)
    with trio.fail_after(30):
        await listener.bootstrapped.wait()
        assert await listener.provide_namespace(namespace)
    return boot, listener, silent_addr


async def add_silent_peer(node: Node, addr: Multiaddr) -> None:
    """Put a peer that never answers into `node`'s routing table (one of its lookup's closest)."""
    silent = ID.from_pubkey(new_identity().public_key)
    node.host.get_peerstore().add_addrs(silent, [addr], 3600)
    assert await node.dht.routing_table.add_peer(PeerInfo(silent, [addr]))


async def test_dialer_connects_before_its_lookup_ends(tmp_path: Path) -> None:
    namespace = "stream-test"
    async with trio.open_nursery() as nursery:
        boot, listener, silent_addr = await network(nursery, tmp_path, namespace)
        dialer = Node(config("dialer", tmp_path, bootstrap=[boot.listen_addrs()[0]]))
        await nursery.start(dialer.run)
        with trio.fail_after(30):
            await dialer.bootstrapped.wait()
        await add_silent_peer(dialer, silent_addr)

        peers: dict[ID, None] = {}
        found = trio.Event()
        start = trio.current_time()
        nursery.start_soon(discover_and_connect, dialer, namespace, peers, found)
        with trio.fail_after(30):
            await found.wait()
        took = trio.current_time() - start
        assert list(peers) == [listener.peer_id]
        # the old dialer waited for the lookup to end: the silent peer's dial deadline
        assert took < DIAL_TIMEOUT / 2, f"connected after {took:.1f} s"
        nursery.cancel_scope.cancel()


async def test_p2p_client_connects_before_its_lookup_ends(tmp_path: Path) -> None:
    namespace = "stream-client"
    async with trio.open_nursery() as nursery:
        boot, listener, silent_addr = await network(nursery, tmp_path, namespace)
        cfg = config("client", tmp_path)
        async with P2PClient([boot.listen_addrs()[0]], namespace, config=cfg) as client:
            await add_silent_peer(client.node, silent_addr)
            start = trio.current_time()
            with trio.fail_after(30):
                peer = await client.connect_to_peer(timeout=20)
            took = trio.current_time() - start
        assert peer == str(listener.peer_id)
        assert took < DIAL_TIMEOUT / 2, f"connected after {took:.1f} s"  # was: the lookup's end
        nursery.cancel_scope.cancel()
