"""Lookup tracing: which peers a DHT lookup asked, at what hop, and where time went.

Not a bug fix: an override of py-libp2p's private per-peer query methods
(`PeerRouting._query_peer_for_closest`, `ProviderStore._get_providers_from_peer_with_closers`)
so `trace_lookup()` can count hops. py-libp2p has no hook for it. Per DHT.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/peer_routing.py#L350
and https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/provider_store.py#L460;
no upstream issue found.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from libp2p.peer.id import ID


@dataclass
class LookupTrace:
    """Hop depth of every peer a lookup learned about: the peers we start from are hop 1,
    peers they return are hop 2, and so on. `found_at` is the hop that answered with a
    provider (0: we had the record ourselves)."""

    depth: dict[ID, int] = field(default_factory=dict)
    queries: int = 0
    found_at: int | None = None
    max_hop: int = 0
    # With trace_lookup(detail=True): one entry per GET_PROVIDERS query (where its time went).
    steps: list[dict[str, Any]] | None = None
    started: float = field(default_factory=time.perf_counter)

    def hop(self, peer: ID) -> int:
        return self.depth.get(peer, 1)

    def step(self, **fields: Any) -> None:
        if self.steps is not None:
            self.steps.append(fields)


_trace: ContextVar[LookupTrace | None] = ContextVar("punch_lookup_trace", default=None)


@contextmanager
def trace_lookup(detail: bool = False) -> Iterator[LookupTrace]:
    """Trace the DHT queries made inside this block (trio child tasks inherit it); with
    `detail`, also each query's timing: was the peer connected, stream open (a dial if
    not), request/response, and when it started (`LookupTrace.steps`)."""
    trace = LookupTrace(steps=[] if detail else None)
    token = _trace.set(trace)
    try:
        yield trace
    finally:
        _trace.reset(token)


def install_tracing(dht: Any) -> None:
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
