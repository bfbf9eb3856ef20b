"""DHT diagnostics behind the NodeAPI's `dht_provide`, `dht_find_providers`, `dht_refresh`
and `health` (what kubo offers as `ipfs routing provide|findprovs` and `ipfs stats dht`):
the DHT work a caller asks of one node, timed, with typed results.

`key` is any text; its DHT key is the sha2-256 multihash of its UTF-8 bytes, as for a
namespace (`dht_key(namespace_multihash(key))`), so `dht_find_providers("my-app")` finds
the listeners of namespace `my-app`.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import psutil
import trio

from punch_net.api import ConnManagerStats, DHTProvideResult, Health, LookupStep, ProviderLookup, RefreshResult
from punch_net.dht import refresh as dht_refresh
from punch_net.dht.keys import dht_key, namespace_multihash
from punch_net.errors import BadArgs
from punch_net.node import Node
from punch_net.p2p.patches.kad_lookup_tracing import trace_lookup

if TYPE_CHECKING:  # routing/ sits above dht/: the type only
    from punch_net.routing.connmgr import ConnManager

MAX_KEY_LEN = 256
# A caller must not hold a node's DHT busy for long: one lookup or provide is bounded here
# (the control layer's own bound for `timeout` arguments, 300 s, is for every method).
MAX_DHT_TIMEOUT = 30.0
MAX_COUNT = 100
LAG_TICK = 0.005


def key_of(key: str) -> str:
    """The DHT key (hex multihash) of a caller's text key; BadArgs if it is empty or long."""
    if not key or len(key) > MAX_KEY_LEN:
        raise BadArgs(f"'key' must be a string of 1..{MAX_KEY_LEN} characters")
    return dht_key(namespace_multihash(key))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def provide(node: Node, key: str) -> DHTProvideResult:
    """Announce `key` (the closest-peers walk and the ADD_PROVIDER messages), at most 30 s."""
    raw = key_of(key)
    start = time.perf_counter()
    ok = False
    with trio.move_on_after(MAX_DHT_TIMEOUT):
        ok = bool(await node.dht.provide(raw))
    return DHTProvideResult(ok=ok, ms=_ms(time.perf_counter() - start))


async def find_providers(node: Node, key: str, count: int = 20, timeout: float = 10.0,
                         trace: bool = False) -> ProviderLookup:
    """One provider walk for `key`, stopping at `count` providers or after `timeout`."""
    raw = key_of(key)
    if not 0 < timeout <= MAX_DHT_TIMEOUT:
        raise BadArgs(f"'timeout' must be a number of seconds in (0, {MAX_DHT_TIMEOUT:g}]")
    if not 1 <= count <= MAX_COUNT:
        raise BadArgs(f"'count' must be an integer in [1, {MAX_COUNT}]")
    found: list[object] = []
    lag: list[float] = []
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        if trace:
            nursery.start_soon(_loop_lag, lag)
        with trace_lookup(trace) as traced, trio.move_on_after(timeout):
            found = list(await node.dht.find_providers(raw, count))
        ms = _ms(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    providers = sorted({str(p.peer_id) for p in found})  # type: ignore[attr-defined]
    # found_at stays None when no query named a provider; 0 queries and no record: 0 hops
    hops = traced.found_at if traced.queries or traced.found_at is not None else 0
    if not trace:
        return ProviderLookup(providers=providers, ms=ms, hops=hops, queries=traced.queries)
    steps = [_step(s) for s in traced.steps or []]
    return ProviderLookup(providers=providers, ms=ms, hops=hops, queries=traced.queries, steps=steps,
                          lag_max_ms=round(max(lag, default=0.0), 1), lag_total_ms=round(sum(lag), 1))


def _step(fields: dict[str, object]) -> LookupStep:
    """A typed step from the tracer's record (p2p/patches/kad_provider_query.py writes them)."""

    def num(name: str) -> float:
        value = fields.get(name)
        return float(value) if isinstance(value, int | float) else 0.0

    rpc = fields.get("rpc_ms")
    providers, closer = fields.get("providers", 0), fields.get("closer", 0)
    return LookupStep(peer=str(fields.get("peer", "")), connected=bool(fields.get("connected")),
                      at_ms=num("at_ms"), open_ms=num("open_ms"),
                      rpc_ms=float(rpc) if isinstance(rpc, int | float) else None, total_ms=num("total_ms"),
                      providers=providers if isinstance(providers, int) else 0,
                      closer=closer if isinstance(closer, int) else 0, error=str(fields.get("error", "")))


async def _loop_lag(out: list[float]) -> None:
    """How late this node's event loop wakes a 5 ms sleeper (ms past due, one entry per
    tick above 1 ms): time a traced lookup spent waiting for the CPU or for other tasks."""
    while True:
        due = time.perf_counter() + LAG_TICK
        await trio.sleep(LAG_TICK)
        late = (time.perf_counter() - due) * 1000
        if late > 1.0:
            out.append(late)


async def refresh(node: Node) -> RefreshResult:
    """A forced refresh (every region, however recently visited), then every key we
    provide announced again, each bounded by 30 s."""
    result = await dht_refresh.refresh(node, max_age=0)
    reprovided = 0
    for raw in list(node.dht.provider_store.providing_keys):
        with trio.move_on_after(MAX_DHT_TIMEOUT):
            reprovided += bool(await node.dht.provide(raw.hex()))
    return RefreshResult(before=int(result["before"]), after=int(result["after"]),
                         evicted_clients=int(result["evicted_clients"]), lookups=int(result["lookups"]),
                         ms=float(result["ms"]), reprovided=reprovided)


def rss_bytes() -> int:
    try:
        return int(psutil.Process().memory_info().rss)
    except psutil.Error:
        return 0


def health(node: Node, connmgr: ConnManager) -> Health:
    """What the process and the node look like now; cheap and synchronous (no network)."""
    cm = connmgr.stats()
    last_trim = cm.get("last_trim")
    return Health(
        peer_id=str(node.peer_id), role=node.config.role, pid=os.getpid(), rss_bytes=rss_bytes(),
        uptime_s=round(time.time() - node.started_at, 1), connections=len(node.connected_peers()),
        routing_table_size=node.dht.get_routing_table_size(), bootstrapped=node.bootstrapped.is_set(),
        connmgr=ConnManagerStats(low=int(cm["low"]), high=int(cm["high"]), grace_s=float(cm["grace_s"]),
                                 pruned=int(cm["pruned"]),
                                 last_trim=float(last_trim) if last_trim is not None else None),
        dial_errors=node.counters.dial_errors)


__all__ = ["MAX_COUNT", "MAX_DHT_TIMEOUT", "MAX_KEY_LEN", "find_providers", "health", "key_of", "provide",
           "refresh", "rss_bytes"]
