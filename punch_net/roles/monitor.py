"""Monitor: a DHT server (and relay) that maps the network.

It crawls every peer's routing table periodically (punch_net/dht/crawler.py), identifies each
peer (agent, protocols, addresses), checks liveness (ping), asks Punch nodes for their
capabilities (they then re-announce to us) and keeps our reputation of each. The map is
a `NetworkMap` (composed in punch_net/runtime.py), offered as the `network` part of
snapshots and the read-only `monitor.peers` JSON command.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import trio

from punch_net import events as ev
from punch_net.config import NodeConfig
from punch_net.flag_types import positive
from punch_net.messaging.commands import Call
from punch_net.node import Node

if TYPE_CHECKING:  # the crawler is composed (and imported) by the runtime for this role only
    from punch_net.dht.crawler import Crawler, NetworkMap


async def run_monitor(node: Node, netmap: NetworkMap, crawler: Crawler) -> int:
    async def peers(call: Call) -> dict[str, object]:
        return netmap.snapshot()

    node.registry.register("monitor.peers", peers)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(crawler.run)
        nursery.start_soon(_follow_capabilities, node, netmap)
    return 0


async def _follow_capabilities(node: Node, netmap: NetworkMap) -> None:
    """Re-announced capabilities update the map between crawls."""
    with node.bus.subscribe(1000) as events:
        async for event in events:
            if isinstance(event, ev.CapabilitiesUpdated):
                entry = netmap.peers.get(event.peer_id)
                if entry is not None:
                    entry.capabilities = event.capabilities
                    entry.capabilities_at = time.time()
                    entry.last_seen = time.time()


def add_arguments(parser: argparse.ArgumentParser) -> None:

    m = parser.add_argument_group("monitor")
    m.add_argument("--crawl-interval", type=positive, metavar="SECONDS",
                   help="seconds between crawl rounds (60)")


def configure(cfg: NodeConfig, args: argparse.Namespace) -> None:
    value = getattr(args, "crawl_interval", None)
    if value is not None:
        cfg.crawl_interval = value
