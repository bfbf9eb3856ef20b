"""Provider lookups as one GET_PROVIDERS walk (punch_net/dht/walk.py, its query in
punch_net/p2p/patches/kad_provider_query.py), shown on a chain A - B - C of in-process
py-libp2p hosts where only C holds the record and A knows only B.

Bug half: py-libp2p's GET_PROVIDERS query returns B's closer peer C without C's address,
so a walk built on it cannot go on to C (hence py-libp2p's extra FIND_NODE lookup first).
Fix half: our query stores the address, and the walk reaches C and stops at the first
provider.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.kad_dht.routing_table import peer_id_to_key
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service
from punch_harness import libp2p_host, multiaddr_of, peer_info_of, silent_port

from punch_net.dht import walk as dht_walk
from punch_net.dht.walk import LOOKUP_K, provider_walk
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.p2p.identity import new_identity
from punch_net.p2p.patches import kad_provider_query

quiet_libp2p_logging()


@asynccontextmanager
async def dht_host() -> AsyncIterator[tuple[IHost, KadDHT]]:
    async with libp2p_host() as host:
        dht = KadDHT(host, DHTMode.SERVER)
        async with background_trio_service(dht):
            yield host, dht


def known_addrs(host: IHost, peer: object) -> list[object]:
    try:
        return list(host.get_peerstore().addrs(peer))  # type: ignore[arg-type]
    except Exception:
        return []


def counting_walk(dht: KadDHT, query: Any) -> tuple[Any, list[object]]:
    """The provider walk of `dht`, its GET_PROVIDERS queries going through `query` and
    recorded (peer by peer, in order) in the returned list."""
    asked: list[object] = []

    async def counting(peer: object, k: bytes) -> tuple[list[PeerInfo], list[object]]:
        asked.append(peer)
        return await query(peer, k)  # type: ignore[no-any-return]

    dht.provider_store._get_providers_from_peer_with_closers = counting  # type: ignore[method-assign, assignment]
    return dht_walk.provider_walk(dht), asked


async def test_walk_reaches_a_provider_two_hops_away_and_stops_there() -> None:
    key = hashlib.sha256(b"punch-walk-test").digest()
    async with dht_host() as (ha, a), dht_host() as (hb, b), dht_host() as (hc, c):
        with trio.fail_after(20):
            await ha.connect(peer_info_of(str(hb.get_addrs()[0])))
            await hb.connect(peer_info_of(str(hc.get_addrs()[0])))
            await a.add_peer(hb.get_id())
            await b.add_peer(hc.get_id())
        c.provider_store.add_provider(key, PeerInfo(hc.get_id(), hc.get_addrs()))
        cid = hc.get_id()

        with trio.fail_after(20):
            _, closer = await a.provider_store._get_providers_from_peer_with_closers(hb.get_id(), key)
        assert cid in closer
        assert known_addrs(ha, cid) == [], "bug: py-libp2p keeps C's address (upstream fixed?)"

        query = kad_provider_query.get_providers_query(ha, a)
        with trio.fail_after(20):
            providers, closer = await query(hb.get_id(), key)
        assert providers == [] and cid in closer
        assert known_addrs(ha, cid), "fix: C's address from B's answer is in A's peerstore"

        walk, asked = counting_walk(a, query)
        with trio.fail_after(30):
            found = await walk(key, 1)
        assert [p.peer_id for p in found] == [cid]
        assert asked == [hb.get_id(), cid], f"walk asked {asked}"


async def test_a_known_provider_does_not_hide_one_that_joined_later() -> None:
    """A catalogue or a download asks again to find new providers: what the walk found (and
    remembered) before must not end the next walk early."""
    key = hashlib.sha256(b"punch-walk-rejoin").digest()
    async with dht_host() as (ha, a), dht_host() as (hb, b), dht_host() as (hc, c):
        with trio.fail_after(20):
            await ha.connect(peer_info_of(str(hb.get_addrs()[0])))
            await ha.connect(peer_info_of(str(hc.get_addrs()[0])))
            await a.add_peer(hb.get_id())
            await a.add_peer(hc.get_id())
        walk = dht_walk.provider_walk(a)
        b.provider_store.add_provider(key, PeerInfo(hb.get_id(), hb.get_addrs()))
        with trio.fail_after(20):
            first = await walk(key, 20)
        assert [p.peer_id for p in first] == [hb.get_id()]
        c.provider_store.add_provider(key, PeerInfo(hc.get_id(), hc.get_addrs()))  # joins later
        with trio.fail_after(20):
            again = await walk(key, 20)
        assert {p.peer_id for p in again} == {hb.get_id(), hc.get_id()}
        with trio.fail_after(20):
            assert len(await walk(key, 1)) == 1  # enough known already: no walk needed


async def test_walk_asks_connected_peers_before_dialing(monkeypatch: pytest.MonkeyPatch) -> None:
    """B (connected), C and D (known, not connected, closer to the key) all hold the record.
    The walk used to ask the three closest at once, dialing C and D, whose dials were then
    cancelled when B answered; now it asks B alone and dials nobody. When B does not have
    the record, the dials go ahead and the walk still finds it."""
    monkeypatch.setattr(dht_walk, "DIAL_HOLD", 30.0)  # deterministic on a slow machine
    async with dht_host() as (ha, a), dht_host() as (hb, b), dht_host() as (hc, c), dht_host() as (hd, d):
        with trio.fail_after(20):
            await ha.connect(peer_info_of(str(hb.get_addrs()[0])))
            await a.add_peer(hb.get_id())
        for host in (hc, hd):  # in A's table and peerstore, not connected
            ha.get_peerstore().add_addrs(host.get_id(), host.get_addrs(), 3600)
            await a.routing_table.add_peer(PeerInfo(host.get_id(), host.get_addrs()))
        assert not ha.get_network().get_connections(hc.get_id())

        def distance(peer: object, key: bytes) -> int:
            mine = hashlib.sha256(peer.to_bytes()).digest()  # type: ignore[attr-defined]
            return int.from_bytes(mine, "big") ^ int.from_bytes(hashlib.sha256(key).digest(), "big")

        def key_where_b_is_farthest(tag: str) -> bytes:
            for i in range(1000):
                key = hashlib.sha256(f"{tag}-{i}".encode()).digest()
                if distance(hb.get_id(), key) > max(distance(hc.get_id(), key), distance(hd.get_id(), key)):
                    return key
            raise AssertionError("no key found")

        walk, asked = counting_walk(a, kad_provider_query.get_providers_query(ha, a))
        provider = PeerInfo(hd.get_id(), hd.get_addrs())

        key = key_where_b_is_farthest("everyone-has-it")
        for store in (b, c, d):
            store.provider_store.add_provider(key, provider)
        with trio.fail_after(30):
            found = await walk(key, 1)
        assert [p.peer_id for p in found] == [hd.get_id()]
        assert asked == [hb.get_id()], f"walk asked {asked}: it dialed while a connected peer could answer"
        assert not ha.get_network().get_connections(hc.get_id())

        asked.clear()
        key = key_where_b_is_farthest("only-c-and-d")
        for store in (c, d):
            store.provider_store.add_provider(key, provider)
        with trio.fail_after(30):
            found = await walk(key, 1)
        assert [p.peer_id for p in found] == [hd.get_id()]
        assert asked[0] == hb.get_id() and len(asked) >= 2


async def test_a_silent_peer_does_not_hide_a_provider_found_at_once() -> None:
    """B answers at once that C provides the key; S, also in A's table, is a TCP port that
    accepts and never speaks, so the walk's query to S lasts until A's dial deadline (5 s).

    Bug half: the walk used to be all-or-nothing, so a caller's timeout shorter than that
    (a download's discovery round, a catalogue) cancelled it and got nothing, although the
    first answer had named C. Fix half: C reaches `on_provider` as soon as B answers, and a
    walk stopped by its own `timeout` returns C."""
    from libp2p.peer.id import ID

    from punch_net.p2p.identity import new_identity

    key = hashlib.sha256(b"punch-walk-silent").digest()

    async with dht_host() as (ha, a), dht_host() as (hb, b), trio.open_nursery() as nursery:
        silent_addr = await silent_port(nursery)
        silent = ID.from_pubkey(new_identity().public_key)
        ha.get_peerstore().add_addrs(silent, [silent_addr], 3600)
        await a.routing_table.add_peer(PeerInfo(silent, [silent_addr]))
        with trio.fail_after(20):
            await ha.connect(peer_info_of(str(hb.get_addrs()[0])))
            await a.add_peer(hb.get_id())
        provider = ID.from_pubkey(new_identity().public_key)
        b.provider_store.add_provider(key, PeerInfo(provider, [multiaddr_of("/ip4/127.0.0.1/tcp/9")]))
        walk = dht_walk.provider_walk(a)

        got: list[PeerInfo] = []
        with trio.move_on_after(2.0):  # the old way: cancel the walk from outside
            got = await walk(key, 20)
        assert got == [], "bug: the walk ended before the silent peer's deadline (fixed upstream?)"
        a.provider_store.providers.clear()  # forget what that walk remembered

        named_at: list[float] = []
        start = trio.current_time()
        with trio.fail_after(10):
            found = await walk(key, 20, timeout=2.0,
                               on_provider=lambda info: named_at.append(trio.current_time() - start))
        elapsed = trio.current_time() - start
        assert [p.peer_id for p in found] == [provider]
        assert len(named_at) == 1 and named_at[0] < 1.5, named_at
        assert 1.9 < elapsed < 4.0, elapsed
        nursery.cancel_scope.cancel()


async def test_a_provider_is_kept_when_the_answer_carries_its_older_signed_record() -> None:
    """B cached C's signed peer record; C then issued a newer one (its addresses changed:
    a relay reservation came or went), which A already holds. py-libp2p drops a provider
    whose record is older than the one we hold, so C vanished from B's answers for every
    peer that had talked to C since (bug half). Our query keeps it (fix half); a forged
    record is still refused."""
    from libp2p.peer.peerstore import issue_and_cache_local_record

    key = hashlib.sha256(b"punch-walk-old-record").digest()
    async with dht_host() as (ha, a), dht_host() as (hb, b), dht_host() as (hc, _):
        with trio.fail_after(20):
            await hb.connect(peer_info_of(str(hc.get_addrs()[0])))  # B learns C's record
            await ha.connect(peer_info_of(str(hb.get_addrs()[0])))
        await wait_record(hb, hc.get_id())
        old_seq = hb.get_peerstore().get_peer_record(hc.get_id()).record().seq  # type: ignore[union-attr]
        issue_and_cache_local_record(hc)  # C's newer record ...
        with trio.fail_after(20):
            await ha.connect(peer_info_of(str(hc.get_addrs()[0])))  # ... reaches A by identify
        await wait_record(ha, hc.get_id(), newer_than=old_seq)
        b.provider_store.add_provider(key, PeerInfo(hc.get_id(), hc.get_addrs()))

        with trio.fail_after(20):
            found, _ = await a.provider_store._get_providers_from_peer_with_closers(hb.get_id(), key)
        assert found == [], "bug: py-libp2p keeps a provider with an older record (fixed upstream?)"
        query = kad_provider_query.get_providers_query(ha, a)
        with trio.fail_after(20):
            found, _ = await query(hb.get_id(), key)
        assert [p.peer_id for p in found] == [hc.get_id()]

        old_record = hb.get_peerstore().get_peer_record(hc.get_id())
        assert old_record is not None
        forged = Message.Peer(id=hb.get_id().to_bytes(), signedRecord=old_record.marshal_envelope())
        assert not kad_provider_query.record_acceptable(forged, ha), "C's record presented as B's"
        garbage = Message.Peer(id=hc.get_id().to_bytes(), signedRecord=b"\x0a\x03abc")
        assert not kad_provider_query.record_acceptable(garbage, ha)


async def wait_record(host: IHost, peer: object, newer_than: int = -1) -> None:
    """Until `host` holds a signed peer record of `peer` with seq > newer_than (identify
    runs in the background after a connect)."""
    with trio.fail_after(10):
        while True:
            env = host.get_peerstore().get_peer_record(peer)  # type: ignore[arg-type]
            if env is not None and env.record().seq > newer_than:
                return
            await trio.sleep(0.02)


async def test_dead_peers_closer_to_the_key_do_not_end_the_walk() -> None:
    """Peers that left (a refused port) but that others still hand out can be the k closest
    to a key. Each drops out of the k closest when it fails, so the walk goes on to the
    live peer holding the record; it used to end once those k had 'answered'."""
    key = hashlib.sha256(b"punch-walk-dead-closest").digest()
    target = int.from_bytes(hashlib.sha256(key).digest(), "big")
    async with dht_host() as (ha, a), dht_host() as (hb, b):
        with trio.fail_after(20):
            await ha.connect(peer_info_of(str(hb.get_addrs()[0])))
            await a.add_peer(hb.get_id())
        b.provider_store.add_provider(key, PeerInfo(hb.get_id(), hb.get_addrs()))
        live = int.from_bytes(peer_id_to_key(hb.get_id()), "big") ^ target
        with socket.socket() as probe:  # a port nothing listens on: dials are refused at once
            probe.bind(("127.0.0.1", 0))
            refused = multiaddr_of(f"/ip4/127.0.0.1/tcp/{probe.getsockname()[1]}")
        dead = []
        for _ in range(5000):  # ids closer to the key than B, more than a walk's k
            pid = ID.from_pubkey(new_identity().public_key)
            if int.from_bytes(peer_id_to_key(pid), "big") ^ target < live:
                ha.get_peerstore().add_addrs(pid, [refused], 3600)
                await a.routing_table.add_peer(PeerInfo(pid, [refused]))
                dead.append(pid)
                if len(dead) == 2 * LOOKUP_K:
                    break
        closest = a.routing_table.find_local_closest_peers(key, LOOKUP_K)
        assert hb.get_id() not in closest, "B must start outside the k closest, behind the dead"
        with trio.fail_after(60):
            found = await provider_walk(a)(key, 1, timeout=45)
        assert [p.peer_id for p in found] == [hb.get_id()]
