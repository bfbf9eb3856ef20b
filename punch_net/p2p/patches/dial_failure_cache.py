"""A peer whose dial failed once is refused for 60 s, even after it is back.

Bug: the swarm refuses every dial to a peer for 60 s after one failed dial
(`Swarm._negative_peer_cache`, checked first in `dial_peer`), so a bootstrap node or relay
that restarts is unreachable for a minute. Punch evicts the peer before dialing an address
the user configured (per call, not installed).
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/network/swarm.py#L289
(checked in `dial_peer`, #L733); no upstream issue found.
"""

from __future__ import annotations

from libp2p.abc import IHost
from libp2p.peer.id import ID


def forget_dial_failure(host: IHost, peer: ID) -> None:
    """Let an explicit dial to `peer` through the "recently failed all addresses" cache."""
    cache = getattr(host.get_network(), "_negative_peer_cache", None)
    if cache is not None:
        cache.evict(str(peer))
