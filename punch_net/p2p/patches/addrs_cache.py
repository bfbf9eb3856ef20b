"""`host.get_addrs()` recomputes our advertised addresses on every call.

Bug: `BasicHost.get_addrs()` reads every listen socket (getsockname and a multiaddr parse),
asks the observed-address manager, runs the addrs factory (interface addresses for
0.0.0.0) and re-appends `/p2p/<us>` to each address: 0.1-0.7 ms of CPU a call, and every
outgoing DHT RPC makes one (`peerstore.env_to_send_in_RPC` compares it with the signed
peer record), as do identify and provider records: ~90 calls in a swarm downloader's 10 s.
Fix: the last result is kept while its inputs are the same: the factory's generation
(`AdvertisedAddrs.generation`: observed or port-mapped addresses changed) and the host's
listeners. Per host.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/host/basic_host.py#L492; no upstream issue found.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import multiaddr
from libp2p.abc import IHost

# What the key cannot see (a listen socket closing at shutdown, an interface address
# changing: cached 30 s anyway, py-libp2p's own observed addresses, which a bound
# AdvertisedAddrs ignores) is served at most this long.
TTL = 1.0


def install(host: IHost, generation: Callable[[], int], ttl: float = TTL) -> None:
    """Cache `host.get_addrs()` until `generation()` or the listeners change, or `ttl` s pass."""
    original = host.get_addrs
    listeners = host.get_network().listeners
    cached: list[multiaddr.Multiaddr] = []
    key: tuple[int, tuple[int, ...]] | None = None
    expires = 0.0

    def get_addrs() -> list[multiaddr.Multiaddr]:
        nonlocal cached, key, expires
        now = time.monotonic()
        current = (generation(), tuple(map(id, listeners.values())))
        if current != key or now >= expires:
            cached = list(original())
            # nothing yet (a listener still binding its socket) is never kept: identify
            # polls until there is something
            key, expires = (current, now + ttl) if cached else (None, 0.0)
        return list(cached)  # the caller's own list

    host.get_addrs = get_addrs  # type: ignore[method-assign]
