"""The DHT-at-scale workarounds in punch_net/p2p/workarounds.py: each test shows the bug
on plain py-libp2p 0.8.1, then the fix. In-process hosts on 127.0.0.1.

If a "bug" half starts failing, upstream fixed it and the workaround can go.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.abc import IHost
from libp2p.kad_dht import kad_dht as kad_module
from libp2p.kad_dht import peer_routing as routing_module
from libp2p.kad_dht import provider_store as provider_module
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.peer_routing import PeerRouting
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service
from punch_harness import libp2p_host, peer_info_of

from punch_net.p2p.workarounds import (
    disable_auto_connector,
    evict_client_peers,
    install_dead_peer_eviction,
    install_server_only_routing,
    limit_kad_concurrency,
    quiet_libp2p_logging,
)

quiet_libp2p_logging()


@asynccontextmanager
async def dht_host(mode: DHTMode) -> AsyncIterator[tuple[IHost, KadDHT]]:
    async with libp2p_host() as host:
        dht = KadDHT(host, mode)
        async with background_trio_service(dht):
            yield host, dht


def addr_of(host: IHost) -> str:
    return str(host.get_addrs()[0])


async def connect(a: IHost, b: IHost) -> None:
    with trio.fail_after(10):
        await a.connect(peer_info_of(addr_of(b)))


async def wait_identified(host: IHost, peer: ID, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not host.get_peerstore().get_protocols(peer):
            await trio.sleep(0.05)


# ---------------------------------------------------------------------- α = 3


class _StubTable:
    def __init__(self, peers: list[ID]) -> None:
        self.peers = peers

    def find_local_closest_peers(self, key: bytes, count: int = 20) -> list[ID]:
        return self.peers[:count]

    def remove_peer(self, peer: ID) -> bool:
        return True


class _StubHost:
    def __init__(self) -> None:
        self.me = ID(b"\x00\x05hello")

    def get_id(self) -> ID:
        return self.me


async def max_in_flight_of_one_lookup() -> int:
    """Run py-libp2p's iterative lookup over 20 candidates whose queries each take a
    moment, and report the most queries it kept in flight at once."""
    peers = [ID(bytes([0, 4, i, i, i, i])) for i in range(20)]
    routing = PeerRouting(_StubHost(), _StubTable(peers))  # type: ignore[arg-type]
    in_flight = 0
    peak = 0

    async def query(peer: ID, key: bytes) -> list[ID]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(0.01)
        in_flight -= 1
        return []

    routing._query_peer_for_closest = query  # type: ignore[method-assign]
    with trio.fail_after(10):
        await routing.find_closest_peers_network(b"target")
    return peak


async def test_lookup_concurrency_is_alpha_3(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (kad_module, routing_module, provider_module):
        monkeypatch.setattr(module, "ALPHA", 10)  # the library's value, restored after the test
    assert await max_in_flight_of_one_lookup() == 10  # bug: 10 queries (and dials) at once
    limit_kad_concurrency()
    assert routing_module.ALPHA == provider_module.ALPHA == kad_module.ALPHA == 3
    assert await max_in_flight_of_one_lookup() == 3  # fix: α = 3 as the spec says


# ---------------------------------------------------------------------- client-mode peers


async def client_lookup_lands_in_server_table(fix: bool) -> tuple[bool, int]:
    """A client-mode node looks something up through a server: is it then in the
    server's routing table (and would the server hand it out)?"""
    async with dht_host(DHTMode.SERVER) as (server, server_dht), dht_host(DHTMode.CLIENT) as (client, client_dht):
        if fix:
            install_server_only_routing(server, server_dht)
        await connect(client, server)
        await wait_identified(client, server.get_id())
        with trio.fail_after(15):
            await client_dht.peer_routing.find_closest_peers_network(b"anything")
        await trio.sleep(0.2)
        in_table = server_dht.routing_table.peer_in_table(client.get_id())
        return in_table, evict_client_peers(server, server_dht)


async def test_client_mode_peers_stay_out_of_the_routing_table() -> None:
    in_table, evicted = await client_lookup_lands_in_server_table(fix=False)
    assert in_table, "bug: the kad server adds a client-mode peer that opened a kad stream"
    assert evicted == 1, "evict_client_peers removes it once identify says it is a client"
    in_table, evicted = await client_lookup_lands_in_server_table(fix=True)
    assert not in_table and evicted == 0


# ---------------------------------------------------------------------- dead peers


async def dead_peer_stays_after_failed_query(fix: bool) -> bool:
    async with dht_host(DHTMode.SERVER) as (host, dht):
        if fix:
            install_dead_peer_eviction(host, dht)
        async with dht_host(DHTMode.SERVER) as (other, _other_dht):
            await connect(host, other)
            await wait_identified(host, other.get_id())
            assert await dht.add_peer(other.get_id())
            dead = other.get_id()
        # `other` has stopped (its listener is closed): the next query to it fails.
        with trio.fail_after(10):
            while host.get_network().get_connections(dead):
                await trio.sleep(0.05)
        assert dht.routing_table.peer_in_table(dead)
        with trio.fail_after(20):
            key = b"\x12\x20" + b"k" * 32
            found, closer = await dht.provider_store._get_providers_from_peer_with_closers(dead, key)
        assert not found and not closer
        return bool(dht.routing_table.peer_in_table(dead))


async def test_dead_peer_is_evicted_after_a_failed_query() -> None:
    assert await dead_peer_stays_after_failed_query(fix=False), "bug: a failed GET_PROVIDERS keeps the dead peer"
    assert not await dead_peer_stays_after_failed_query(fix=True)


# ---------------------------------------------------------------------- auto-connector


async def connections_after_auto_connect(fix: bool) -> int:
    async with libp2p_host() as host, libp2p_host() as a, libp2p_host() as b, libp2p_host() as c:
        if fix:
            disable_auto_connector(host)
        store = host.get_peerstore()
        for other in (a, b, c):  # known addresses, as a DHT response leaves them
            store.add_addrs(other.get_id(), [other.get_addrs()[0].decapsulate_code(421)], 3600)
        swarm: Any = host.get_network()
        with trio.fail_after(20):
            await swarm.auto_connector.maybe_connect()
            await trio.sleep(0.5)
        return len(host.get_network().get_connections_map())


async def test_no_blind_dialing_of_peerstore_entries() -> None:
    assert await connections_after_auto_connect(fix=False) == 3, "bug: the auto-connector dials every known peer"
    assert await connections_after_auto_connect(fix=True) == 0
