"""Kademlia lookups keep 10 queries (and dials) in flight instead of the spec's 3.

Bug: py-libp2p sets ALPHA = 10 (kad_dht/common.py) and each module binds its own copy: a
lookup dials 10 new peers per round, which on a 2-core box means 10 Noise handshakes at
once and a connection count that grows with every lookup. Process-wide (the modules are
shared). Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/common.py#L12;
no upstream issue found.
"""

from __future__ import annotations

from libp2p.kad_dht import kad_dht, peer_routing, provider_store

KAD_ALPHA = 3  # query concurrency the Kademlia spec and go/rust-libp2p use
ORIGINAL_ALPHA: int = peer_routing.ALPHA  # type: ignore[attr-defined]


def install(alpha: int = KAD_ALPHA) -> None:
    for module in (kad_dht, peer_routing, provider_store):
        module.ALPHA = alpha  # type: ignore[attr-defined]
