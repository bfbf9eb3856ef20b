"""Every dial takes at least 250 ms, even a loopback connect to a peer's only address.

Bug: `Swarm.dial_peer` staggers addresses ("happy eyeballs"): after starting each dial it
waits `_HAPPY_EYEBALLS_DELAY` (0.25 s) for it to fail, and a dial that succeeds does not
end that wait. Punch dials one TCP address per peer, so there is nothing to stagger: the
delay is set to 0 (process-wide; idempotent).
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/network/swarm.py#L92
(used at #L936); no upstream issue found.
"""

from __future__ import annotations

from libp2p.network import swarm

ORIGINAL_DELAY: float = swarm._HAPPY_EYEBALLS_DELAY  # type: ignore[attr-defined]


def install() -> None:
    swarm._HAPPY_EYEBALLS_DELAY = 0.0  # type: ignore[attr-defined]
