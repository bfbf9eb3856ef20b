"""DHT hygiene for networks of hundreds of nodes: the py-libp2p fixes applied to one
node's DHT, a periodic routing-table refresh, and lookup tracing (hops per lookup).

- α = 3 concurrent queries, k = 20 (workarounds.limit_kad_concurrency; k is the library's).
- Only kad servers enter the routing table; client-mode peers are evicted
  (workarounds.install_server_only_routing / evict_client_peers).
- A peer that fails a query and is not connected is removed (install_dead_peer_eviction).
- No blind dialing of peerstore entries (workarounds.disable_auto_connector).
- Every `refresh_interval` seconds (jittered so a testnet does not refresh in step) we
  look ourselves up and one random key per non-empty bucket, as the spec says; while
  refreshes change nothing the interval doubles up to 10 minutes (`next_interval`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from libp2p.kad_dht.routing_table import gen_random_key_in_bucket
from libp2p.peer.id import ID

from punch_net.p2p.workarounds import (
    disable_auto_connector,
    evict_client_peers,
    install_dead_peer_eviction,
    install_server_only_routing,
    limit_kad_concurrency,
)

if TYPE_CHECKING:
    from punch_net.node import Node

DEFAULT_REFRESH_INTERVAL = 120.0
REFRESH_LOOKUP_TIMEOUT = 15.0
MAX_REFRESH_INTERVAL = 600.0  # a quiet table is refreshed at least this often
MAX_BUCKET_LOOKUPS = 8  # random-key lookups per refresh (the deepest buckets are tiny)


@dataclass
class LookupTrace:
    """Hop depth of every peer a lookup learned about: the peers we start from are hop 1,
    peers they return are hop 2, and so on. `found_at` is the hop that answered with a
    provider (0: we had the record ourselves)."""

    depth: dict[ID, int] = field(default_factory=dict)
    queries: int = 0
    found_at: int | None = None
    max_hop: int = 0

    def hop(self, peer: ID) -> int:
        return self.depth.get(peer, 1)


_trace: ContextVar[LookupTrace | None] = ContextVar("punch_lookup_trace", default=None)


@contextmanager
def trace_lookup() -> Iterator[LookupTrace]:
    """Trace the DHT queries made inside this block (trio child tasks inherit it)."""
    trace = LookupTrace()
    token = _trace.set(trace)
    try:
        yield trace
    finally:
        _trace.reset(token)


def _install_tracing(dht: Any) -> None:
    routing, store = dht.peer_routing, dht.provider_store
    query_closest = routing._query_peer_for_closest
    query_providers = store._get_providers_from_peer_with_closers

    def note(peer: ID, learned: list[ID]) -> int:
        trace = _trace.get()
        if trace is None:
            return 0
        hop = trace.hop(peer)
        trace.queries += 1
        trace.max_hop = max(trace.max_hop, hop)
        for p in learned:
            trace.depth.setdefault(p, hop + 1)
        return hop

    async def closest(peer: ID, key: bytes) -> list[ID]:
        result = await query_closest(peer, key)
        note(peer, list(result))
        return list(result)

    async def providers(peer: ID, key: bytes) -> tuple[list[Any], list[ID]]:
        found, closer = await query_providers(peer, key)
        hop = note(peer, list(closer))
        trace = _trace.get()
        if found and trace is not None and (trace.found_at is None or hop < trace.found_at):
            trace.found_at = hop
        return found, closer

    routing._query_peer_for_closest = closest
    store._get_providers_from_peer_with_closers = providers


def install(host: Any, dht: Any) -> None:
    """Apply every scale fix to a freshly built host and DHT (before the host runs)."""
    limit_kad_concurrency()
    disable_auto_connector(host)
    install_server_only_routing(host, dht)
    install_dead_peer_eviction(host, dht)
    _install_tracing(dht)


async def refresh(node: Node, timeout: float = REFRESH_LOOKUP_TIMEOUT) -> dict[str, Any]:
    """One routing-table refresh: evict client peers, look ourselves up, then one random
    key in each non-empty bucket. Bounded in time; returns what changed."""
    dht = node.dht
    start = time.perf_counter()
    before = dht.get_routing_table_size()
    evicted = evict_client_peers(node.host, dht)
    with trio.move_on_after(timeout):
        try:
            await dht.peer_routing.find_closest_peers_network(node.peer_id.to_bytes())
        except Exception:
            pass
        buckets = [b for b in dht.routing_table.buckets if b.size() > 0][:MAX_BUCKET_LOOKUPS]
        for bucket in buckets:
            try:
                await dht.peer_routing.find_closest_peers_network(gen_random_key_in_bucket(bucket))
            except Exception:
                pass
    node.last_refresh = time.time()
    return {
        "before": before,
        "after": dht.get_routing_table_size(),
        "evicted_clients": evicted,
        "ms": round((time.perf_counter() - start) * 1000, 1),
    }


def next_interval(current: float, base: float, result: dict[str, Any]) -> float:
    """After a refresh: back to `base` if the table shrank or held client peers (churn), else twice as
    long, up to MAX_REFRESH_INTERVAL (kubo refreshes every 10 minutes). A refresh is up
    to 1 + MAX_BUCKET_LOOKUPS lookups with new dials; in a quiet network of hundreds of
    nodes on two cores, refreshing every 2 minutes for ever was most of the idle load."""
    if result.get("after", 0) < result.get("before", 0) or result.get("evicted_clients"):
        return base
    return min(current * 2, max(base, MAX_REFRESH_INTERVAL))


async def maintain(node: Node, interval: float = DEFAULT_REFRESH_INTERVAL) -> None:
    """Refresh the routing table every `interval` seconds (±20 %, backing off while
    nothing changes: `next_interval`) until cancelled."""
    if interval <= 0:
        await trio.sleep_forever()
    await node.bootstrapped.wait()
    current = interval
    while True:
        await trio.sleep(current * random.uniform(0.8, 1.2))
        current = next_interval(current, interval, await refresh(node))
