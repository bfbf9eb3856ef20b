"""Dead peers stay in the kad routing table and keep being handed out.

Bug: a failed FIND_NODE only evicts the peer when opening the stream raises, and a failed
GET_PROVIDERS never does. Fix: after a query that returned nothing, evict the peer if we
are not connected to it (the dial failed or it went away). Per DHT.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/peer_routing.py#L350
and https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/provider_store.py#L460;
no upstream issue found.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo


def install_dead_peer_eviction(host: IHost, dht: Any) -> None:
    network = host.get_network()
    routing = dht.peer_routing
    store = dht.provider_store
    query_closest = routing._query_peer_for_closest
    query_providers = store._get_providers_from_peer_with_closers

    def evict_if_gone(peer: ID) -> None:
        if not network.get_connections(peer):
            dht.routing_table.remove_peer(peer)

    async def closest(peer: ID, key: bytes) -> list[ID]:
        result = await query_closest(peer, key)
        if not result:
            evict_if_gone(peer)
        return list(result)

    async def providers(peer: ID, key: bytes) -> tuple[list[PeerInfo], list[ID]]:
        found, closer = await query_providers(peer, key)
        if not found and not closer:
            evict_if_gone(peer)
        return found, closer

    routing._query_peer_for_closest = closest
    store._get_providers_from_peer_with_closers = providers
