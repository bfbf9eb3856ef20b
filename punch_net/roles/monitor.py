"""Monitor: a DHT server (and relay) that maps the network.

It crawls every peer's routing table periodically (punch_net/crawler.py), identifies each
peer (agent, protocols, addresses), checks liveness (ping), asks Punch nodes for their
capabilities (they then re-announce to us) and keeps our reputation of each. The map is
`node.network_map` (a `NetworkMap`), offered as the `network` part of control-socket
snapshots, the `network` control op, and the read-only `monitor.peers` JSON command.
"""

from __future__ import annotations

import argparse

import trio

from punch_net import events as ev
from punch_net.config import NodeConfig
from punch_net.dht.crawler import Crawler, NetworkMap
from punch_net.messaging.commands import Call
from punch_net.node import Node
from punch_net.ops.control import register_op


async def run_monitor(node: Node) -> int:
    netmap = NetworkMap(str(node.peer_id))
    node.network_map = netmap  # type: ignore[attr-defined]
    crawler = Crawler(node, netmap, interval=node.config.crawl_interval)

    async def peers(call: Call) -> dict[str, object]:
        return netmap.snapshot()

    node.registry.register("monitor.peers", peers)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(crawler.run)
        nursery.start_soon(_follow_capabilities, node, netmap)
    return 0


async def _follow_capabilities(node: Node, netmap: NetworkMap) -> None:
    """Re-announced capabilities update the map between crawls."""
    import time

    with node.bus.subscribe(1000) as events:
        async for event in events:
            if isinstance(event, ev.CapabilitiesUpdated):
                entry = netmap.peers.get(event.peer_id)
                if entry is not None:
                    entry.capabilities = event.capabilities
                    entry.capabilities_at = time.time()
                    entry.last_seen = time.time()


async def _network_op(node: Node, args: dict[str, object]) -> object:
    netmap = getattr(node, "network_map", None)
    if netmap is None:
        from punch_net.ops.control import ControlError

        raise ControlError("not_monitor", "this node is not a monitor")
    return netmap.snapshot()


register_op("network", _network_op)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from punch_net.cli.types import positive

    m = parser.add_argument_group("monitor")
    m.add_argument("--crawl-interval", type=positive, metavar="SECONDS",
                   help="seconds between crawl rounds (60)")


def configure(cfg: NodeConfig, args: argparse.Namespace) -> None:
    value = getattr(args, "crawl_interval", None)
    if value is not None:
        cfg.crawl_interval = value
