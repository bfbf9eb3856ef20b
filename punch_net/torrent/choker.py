"""Upload slots: which downloaders we answer (unchoke) now. Pure logic, no I/O, no clock.

BitTorrent's choker: every RECHOKE_EVERY seconds the interested peers that give us the
most (tit-for-tat; while seeding, those that take the most) get the SLOTS regular slots,
and one more peer, rotated every OPTIMISTIC_EVERY rounds, gets an optimistic slot, so a
newcomer with nothing to give yet can earn a place. A new peer is unchoked at once while
a slot is free, so a lone downloader never waits for a rechoke.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

SLOTS = 4
OPTIMISTIC_EVERY = 3  # rechoke rounds between optimistic-unchoke rotations
RECHOKE_EVERY = 5.0  # seconds (the manager's clock)


@dataclass(frozen=True)
class Candidate:
    peer: Hashable
    rate: float  # bytes/s: what it gives us (downloading) or takes from us (seeding)
    interested: bool = True


class Choker:
    def __init__(self, slots: int = SLOTS, optimistic_every: int = OPTIMISTIC_EVERY,
                 rng: random.Random | None = None) -> None:
        self.slots = slots
        self.optimistic_every = optimistic_every
        self.rng = rng or random.Random()
        self.unchoked: set[Hashable] = set()
        self.optimistic: Hashable | None = None
        self._round = 0

    def admit(self, peer: Hashable) -> bool:
        """A new interested peer: unchoked now (True) while a slot (regular or optimistic) is free."""
        if len(self.unchoked) < self.slots + 1:
            self.unchoked.add(peer)
            return True
        return False

    def forget(self, peer: Hashable) -> None:
        self.unchoked.discard(peer)
        if self.optimistic == peer:
            self.optimistic = None

    def rechoke(self, candidates: Sequence[Candidate]) -> set[Hashable]:
        """The peers to unchoke from now on (everyone else is choked)."""
        interested = [c for c in candidates if c.interested]
        ranked = sorted(interested, key=lambda c: -c.rate)  # stable: ties keep the caller's order
        regular = {c.peer for c in ranked[:self.slots]}
        rest = [c.peer for c in interested if c.peer not in regular]
        rotate = self._round % self.optimistic_every == 0
        self._round += 1
        if self.optimistic not in rest:
            self.optimistic = None
        if rest and (rotate or self.optimistic is None):
            others = [p for p in rest if p != self.optimistic] or rest
            self.optimistic = self.rng.choice(others)
        self.unchoked = regular | ({self.optimistic} if self.optimistic is not None else set())
        return set(self.unchoked)
