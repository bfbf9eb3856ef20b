"""Routing-table refresh aimed at CPL regions (punch_net/dht/refresh.py `refresh`).

Bug half: py-libp2p's refresh looks up `gen_random_key_in_bucket(bucket)`, but every
lookup hashes its target (`sort_peer_ids_by_distance`), so the key lands anywhere in the
key space, not in the bucket: a refresh was 1 + one lookup per non-empty bucket, all but
the self-lookup random. Fix half: after the self-lookup, one lookup per CPL region the
self-lookup did not already cover and no recent lookup of ours visited, each target a
preimage whose hash is in that region (as go-libp2p's refresh manager does).

At 200 nodes on two cores every node's first refresh falls in the same minute; with 9
lookups each that was two cores for over a minute (dht_scale.py's lookups ran inside it).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from types import SimpleNamespace
from typing import Any

import trio
from libp2p.kad_dht.routing_table import gen_random_key_in_bucket, peer_id_to_key
from libp2p.peer.id import ID

from punch_net.dht import refresh as dht_refresh
from punch_net.dht.refresh import refresh_cpls
from punch_net.p2p.patches.kad_lookup_memory import key_cpl


def peer_with_cpl_at_least(me: bytes, cpl: int) -> ID:
    while True:
        peer = ID(os.urandom(34))
        if key_cpl(peer_id_to_key(peer), me) >= cpl:
            return peer


def region(me: bytes, cpl: int) -> tuple[int, int]:
    """Absolute key range of the keys sharing exactly `cpl` leading bits with `me`."""
    span = 1 << (255 - cpl)
    low = (int.from_bytes(me, "big") ^ span) & ~(span - 1)
    return low, low + span


def fake_node(me_id: ID, nearest: list[ID]) -> tuple[Any, list[bytes]]:
    """A node whose lookups only record their targets; the self-lookup returns `nearest`.
    Its table has one non-empty bucket per CPL region 0-3 (what py-libp2p's refresh walks)."""
    looked_up: list[bytes] = []
    me = peer_id_to_key(me_id)

    async def find_closest_peers_network(target: bytes, count: int = 20) -> list[ID]:
        looked_up.append(target)
        return list(nearest) if target == me_id.to_bytes() else []

    buckets = [SimpleNamespace(min_range=lo, max_range=hi, size=lambda: 5)
               for lo, hi in (region(me, c) for c in range(4))]
    table = SimpleNamespace(buckets=buckets, get_peer_ids=lambda: [])
    dht = SimpleNamespace(peer_routing=SimpleNamespace(find_closest_peers_network=find_closest_peers_network),
                          routing_table=table, get_routing_table_size=lambda: 0, local_peer_id=me_id)
    node = SimpleNamespace(dht=dht, host=SimpleNamespace(get_peerstore=lambda: None), peer_id=me_id,
                           last_refresh=None)
    node.refreshed = lambda: setattr(node, "last_refresh", time.time())  # what Node.refreshed() does
    return node, looked_up


def test_bucket_keys_do_not_land_in_their_bucket_once_hashed() -> None:
    """The library's bug, shown directly: a key drawn in a bucket's range, hashed as a
    lookup does, is in that range only by chance (here the half of the space with CPL 0
    is asked 40 times: all 40 landing there has odds 2^-40)."""
    me = peer_id_to_key(ID(os.urandom(34)))
    lo, hi = region(me, 0)
    bucket = SimpleNamespace(min_range=lo, max_range=hi)
    hashed = [hashlib.sha256(gen_random_key_in_bucket(bucket)).digest() for _ in range(40)]  # type: ignore[arg-type]
    assert not all(key_cpl(h, me) == 0 for h in hashed), "bug gone: bucket keys land in their bucket once hashed"


async def test_refresh_looks_up_only_the_regions_the_self_lookup_missed() -> None:
    me_id = ID(os.urandom(34))
    me = peer_id_to_key(me_id)
    # The self-lookup's 20 nearest all share >= 3 bits with us: regions 0-2 lie beyond its
    # reach and region 3 partly (its k-th distance is below 2^253, region 3 reaches 2^253 - 1).
    nearest = [peer_with_cpl_at_least(me, 3) for _ in range(20)]
    node, looked_up = fake_node(me_id, nearest)
    with trio.fail_after(10):
        result = await dht_refresh.refresh(node, max_age=0)
    assert looked_up[0] == me_id.to_bytes(), "the self-lookup comes first"
    cpls = [key_cpl(hashlib.sha256(t).digest(), me) for t in looked_up[1:]]
    assert cpls == [0, 1, 2, 3], f"one lookup per uncovered region, aimed inside it (got CPLs {cpls})"
    assert result["lookups"] == 5

    # A region one of our own lookups visited recently is not looked up again.
    node2, looked_up2 = fake_node(me_id, nearest)
    node2.dht._punch_lookup_cpls = {1: time.monotonic() - 10}
    with trio.fail_after(10):
        await dht_refresh.refresh(node2, max_age=60)
    assert [key_cpl(hashlib.sha256(t).digest(), me) for t in looked_up2[1:]] == [0, 2, 3]

    # Fewer than k peers in the whole network: the self-lookup saw them all.
    node3, looked_up3 = fake_node(me_id, nearest[:7])
    with trio.fail_after(10):
        await dht_refresh.refresh(node3, max_age=0)
    assert looked_up3 == [me_id.to_bytes()]


def test_refresh_plan_stops_where_the_self_lookup_reaches() -> None:
    me = hashlib.sha256(b"me").digest()
    mine = int.from_bytes(me, "big")
    # k-th nearest at distance just below 2^252: keys with CPL >= 4 all lie within it.
    far = (mine ^ ((1 << 252) - 1)).to_bytes(32, "big")
    near = [me] * 19 + [far]
    assert refresh_cpls(me, near, 20, {}, 0.0, 60.0) == [0, 1, 2, 3]
    assert refresh_cpls(me, near, 20, {0: 100.0, 3: 1.0}, 120.0, 60.0) == [1, 2, 3]
    assert refresh_cpls(me, near[:19], 20, {}, 0.0, 60.0) == []


def test_first_refresh_is_spread_over_a_whole_interval() -> None:
    """Nodes started together must not refresh in step: the first delay spans 0.5-1.5 ×
    the interval (a spread of one interval), later ones stay within ±20 %."""
    rng = random.Random(7)
    first = [dht_refresh.refresh_delay(120.0, True, rng) for _ in range(2000)]
    later = [dht_refresh.refresh_delay(120.0, False, rng) for _ in range(2000)]
    assert 60.0 <= min(first) < 66.0 and 174.0 < max(first) <= 180.0
    assert 96.0 <= min(later) and max(later) <= 144.0
