"""Remember which key regions our own DHT lookups visited, for the routing-table refresh.

Not a bug fix: a wrapper around py-libp2p's `PeerRouting.find_closest_peers_network` and
`ProviderStore.find_providers` (py-libp2p has no lookup hook) so a refresh skips CPL regions
a lookup visited within its interval, as go-libp2p's RtRefreshManager does. Per DHT; the
memory is the DHT's `_punch_lookup_cpls` attribute (what dht/refresh.py reads).
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/peer_routing.py
and https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/provider_store.py#L343;
no upstream issue found.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from libp2p.kad_dht.routing_table import peer_id_to_key
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

KEY_BITS = 256


def key_cpl(a: bytes, b: bytes) -> int:
    """Common prefix length of two 256-bit keys (KEY_BITS if equal)."""
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return KEY_BITS - x.bit_length()


def lookup_memory(dht: Any) -> dict[int, float]:
    memory: dict[int, float] | None = getattr(dht, "_punch_lookup_cpls", None)
    if memory is None:
        memory = {}
        dht._punch_lookup_cpls = memory
    return memory


def _note_lookup(dht: Any, target: bytes) -> None:
    """A lookup for `target` finished: the CPL region it lies in counts as refreshed."""
    me = peer_id_to_key(dht.local_peer_id)
    lookup_memory(dht)[key_cpl(hashlib.sha256(target).digest(), me)] = time.monotonic()


def install_lookup_memory(dht: Any) -> None:
    """Remember when our lookups (provides, provider walks, refreshes) visited each CPL
    region, so a refresh skips regions visited within its interval (go-libp2p's
    RtRefreshManager tracks the same per CPL)."""
    routing, store = dht.peer_routing, dht.provider_store
    closest, find = routing.find_closest_peers_network, store.find_providers

    async def find_closest_peers_network(target: bytes, count: int = 20) -> list[ID]:
        result = await closest(target, count)
        if result:
            _note_lookup(dht, target)
        return list(result)

    async def find_providers(key: bytes, count: int = 20, **options: Any) -> list[PeerInfo]:
        found = await find(key, count, **options)
        _note_lookup(dht, key)
        return list(found)

    routing.find_closest_peers_network = find_closest_peers_network
    store.find_providers = find_providers
