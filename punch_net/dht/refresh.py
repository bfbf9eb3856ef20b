"""Routing-table refresh, as go-libp2p's refresh manager does it: every interval
(jittered, backing off while nothing changes) look ourselves up, then one random key per
common-prefix length (CPL) region that the self-lookup did not cover and no lookup of
ours visited lately. Client-mode peers are evicted first.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.kad_dht.routing_table import peer_id_to_key
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from punch_net.dht.walk import LOOKUP_K
from punch_net.node import Node
from punch_net.p2p.patches.kad_lookup_memory import KEY_BITS, key_cpl, lookup_memory
from punch_net.p2p.patches.kad_server_only_routing import evict_client_peers

DEFAULT_REFRESH_INTERVAL = 120.0
REFRESH_LOOKUP_TIMEOUT = 15.0
MAX_REFRESH_INTERVAL = 600.0  # a quiet table is refreshed at least this often
MAX_BUCKET_LOOKUPS = 8  # CPL lookups per refresh, at most
MAX_REFRESH_CPL = 15  # go-libp2p's maxCplForRefresh


class Refresher:
    """The refresh loop as a node component."""

    def __init__(self, node: Node, interval: float = DEFAULT_REFRESH_INTERVAL) -> None:
        self.node = node
        self.interval = interval

    def attach(self, host: IHost, dht: KadDHT) -> None:
        pass

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await maintain(self.node, self.interval)


def target_with_cpl(me: bytes, cpl: int) -> bytes | None:
    """Random lookup target whose key (its sha256: every lookup hashes its target) shares
    exactly `cpl` leading bits with `me`. A preimage search, as go-libp2p's refresh does
    with peer ids: 2^(cpl+1) hashes on average; None if unlucky within a bound (at most
    2^18 hashes, ~0.25 s, reached only for CPLs of networks with millions of nodes)."""
    for _ in range(1 << min(cpl + 5, 18)):
        candidate = os.urandom(32)
        if key_cpl(hashlib.sha256(candidate).digest(), me) == cpl:
            return candidate
    return None











def refresh_cpls(me: bytes, nearest: list[bytes], k: int, visited: dict[int, float], now: float,
                 max_age: float) -> list[int]:
    """Which CPL regions a refresh looks up after its self-lookup found `nearest` (keys).

    Keys sharing exactly c leading bits with ours are at distance [2^(255-c), 2^(256-c)).
    Once that whole range lies within the self-lookup's k-th distance, the self-lookup
    has already seen every peer there (fewer than k found: it saw the whole network), so
    this and deeper regions need no lookup of their own. A region visited by one of our
    lookups less than `max_age` ago is skipped too."""
    if len(nearest) < k:
        return []
    mine = int.from_bytes(me, "big")
    radius = max(mine ^ int.from_bytes(key, "big") for key in nearest)
    out = []
    for cpl in range(MAX_REFRESH_CPL + 1):
        if (1 << (KEY_BITS - cpl)) - 1 <= radius:
            break
        if now - visited.get(cpl, -math.inf) < max_age:
            continue
        out.append(cpl)
    return out[:MAX_BUCKET_LOOKUPS]


async def refresh(node: Node, timeout: float = REFRESH_LOOKUP_TIMEOUT,
                  max_age: float = DEFAULT_REFRESH_INTERVAL) -> dict[str, Any]:
    """One routing-table refresh: evict client peers, look ourselves up, then one random
    key per CPL region the self-lookup did not cover and no lookup of ours visited in
    the last `max_age` seconds (`refresh_cpls`). Bounded in time; returns what changed.

    py-libp2p's own refresh looks up `gen_random_key_in_bucket(bucket)`, but lookups hash
    their target, so those keys land anywhere but in the bucket: random lookups. Here each
    target is chosen so that its hash is in the region meant."""
    dht = node.dht
    start = time.perf_counter()
    before = dht.get_routing_table_size()
    evicted = evict_client_peers(node.host, dht)
    me = peer_id_to_key(node.peer_id)
    lookups = 0
    with trio.move_on_after(timeout):
        nearest: list[ID] = []
        try:
            nearest = list(await dht.peer_routing.find_closest_peers_network(node.peer_id.to_bytes()))
        except Exception:
            pass
        lookups += 1
        plan = refresh_cpls(me, [peer_id_to_key(p) for p in nearest], LOOKUP_K, lookup_memory(dht),
                            time.monotonic(), max_age)
        for cpl in plan:
            target = target_with_cpl(me, cpl)
            if target is None:
                continue
            try:
                await dht.peer_routing.find_closest_peers_network(target)
            except Exception:
                pass
            lookups += 1
    node.refreshed()
    return {
        "before": before,
        "after": dht.get_routing_table_size(),
        "evicted_clients": evicted,
        "lookups": lookups,
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
    nothing changes: `next_interval`) until cancelled. Regions our own lookups visited
    within the last half interval are not looked up again (`refresh_cpls`)."""
    if interval <= 0:
        await trio.sleep_forever()
    await node.bootstrapped.wait()
    current = interval
    first = True
    while True:
        await trio.sleep(refresh_delay(current, first))
        first = False
        current = next_interval(current, interval, await refresh(node, max_age=current / 2))


def refresh_delay(interval: float, first: bool, rng: random.Random | None = None) -> float:
    """Seconds until the next refresh: `interval` ±20 %, but the first one anywhere in
    0.5-1.5 × `interval`. Nodes that start together (a testnet, a restart after an outage)
    would otherwise all refresh within the same minute: at 200 nodes on two cores that
    wave kept both cores busy for a minute and pushed connection counts towards the cap."""
    draw = (rng or random).uniform
    return interval * (draw(0.5, 1.5) if first else draw(0.8, 1.2))
