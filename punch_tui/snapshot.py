"""One immutable picture of the node, taken on the trio side and handed to the UI.

Extension point for other capabilities: a node (or its role) may grow
`node.transfers() -> list[dict]` (one row per transfer; keys become columns) and
`node.relay_status() -> dict` (key/value pairs; list values become a table). When the
node has no such method the tab says "not running in this role".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from punch_net.node import ConnectionInfo, Node, RoutingTableInfo
from punch_net.plain import as_plain_dict
from punch_tui.traffic import TrafficMeter


@dataclass(frozen=True)
class Snapshot:
    ts: float
    stats: dict[str, Any]
    listen_addrs: list[str]
    connections: list[ConnectionInfo]
    routing: RoutingTableInfo | None
    transfers: list[dict[str, Any]] | None = None  # None: the role has no transfers
    relay: dict[str, Any] | None = None  # None: the role has no relay
    extra_errors: list[str] = field(default_factory=list)
    traffic: tuple[int, int] | None = None  # cumulative bytes (in, out); None: unknown
    network: dict[str, Any] | None = None  # monitor: the crawler's map (punch_net/crawler.py)


def _optional(node: Node, name: str, errors: list[str]) -> Any:
    fn = getattr(node, name, None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception as exc:  # a capability's snapshot must never kill the UI
        errors.append(f"{name}(): {exc}")
        return None


def _traffic(node: Node, meter: TrafficMeter | None) -> tuple[int, int] | None:
    stats_in, stats_out = int(node.counters.bytes_in), int(node.counters.bytes_out)
    if stats_in or stats_out:  # the core counts traffic: trust it
        return stats_in, stats_out
    if meter is None:
        return None
    try:
        conns = [c for cs in node.host.get_network().get_connections_map().values() for c in cs]
    except Exception:
        return None
    return meter.sample(conns)


def take_snapshot(node: Node, meter: TrafficMeter | None = None) -> Snapshot:
    """Read every snapshot the node offers; cheap, synchronous, no network."""
    errors: list[str] = []
    routing: RoutingTableInfo | None
    try:
        routing = node.routing_table()
    except Exception as exc:
        errors.append(f"routing_table(): {exc}")
        routing = None
    transfers = _optional(node, "transfers", errors)
    relay = _optional(node, "relay_status", errors)
    netmap = getattr(node, "network_map", None)
    network = _optional(netmap, "snapshot", errors) if netmap is not None else None
    return Snapshot(
        ts=time.time(),
        stats=node.stats(),
        listen_addrs=node.listen_addrs(),
        connections=node.connections(),
        routing=routing,
        transfers=[as_plain_dict(t) for t in transfers] if transfers is not None else None,
        relay=as_plain_dict(relay) if relay is not None else None,
        extra_errors=errors,
        traffic=_traffic(node, meter),
        network=network,
    )
