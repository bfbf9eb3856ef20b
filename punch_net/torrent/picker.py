"""Which piece to ask which peer for: rarest first, endgame at the end.

Among equally rare pieces: file order while every peer we know is a seed (one seeder,
or several servers: sequential writes, and the whole-file hash follows the download, so
little is left to hash after the last piece), otherwise blocks of BLOCK pieces in a
random order, file order inside a block. Downloaders fetching from one seeder thus take
different pieces (they cannot see each other's requests, only their HAVEs), so each soon
has pieces the others lack and can trade them; the first pieces are random, then rarest
first decides.

Pure state machine, no I/O. The downloader tells it what peers have, what it asked for,
what arrived (verified) and what failed; it answers `pick(peer, n)`.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Hashable

Peer = Hashable
BLOCK = 16  # pieces (1 MiB) fetched in file order before jumping to another random block
ENDGAME_DUPLICATES = 2  # at most this many peers fetch the same piece in endgame
# ... and only for the last this many pieces: with seconds of requests in flight per peer,
# "everything missing is requested" comes early, and duplicates then cost the seed's upload.
ENDGAME_PIECES = 32


class PiecePicker:
    def __init__(self, num_pieces: int, have: bytearray | None = None, rng: random.Random | None = None) -> None:
        self.num_pieces = num_pieces
        self._blocks = list(range(-(-num_pieces // BLOCK)))
        (rng or random.Random()).shuffle(self._blocks)
        self._shuffled = False  # the order in use: False = file order (one peer known)
        self.have = bytearray(have) if have is not None else bytearray(num_pieces)
        if len(self.have) != num_pieces:
            raise ValueError("have bitfield size does not match")
        self.availability = [0] * num_pieces
        self.peer_bits: dict[Peer, bytearray] = {}
        self.in_flight: dict[int, set[Peer]] = {}  # piece -> peers asked
        self.peer_requests: dict[Peer, set[int]] = {}
        # The missing pieces, rarest first, base order among equals, kept sorted as one int
        # key per piece (availability * num_pieces + rank): a HAVE moves one key (bisect, in
        # C) instead of re-sorting the whole order on the next pick (measured ~0.3-0.7 ms a
        # pick in a 1 + 8 swarm, where HAVEs arrive between nearly every two picks).
        self._keys: list[int] = []
        self._rank: list[int] = list(range(num_pieces))  # piece -> position in the base order
        self._at: list[int] = list(range(num_pieces))  # position in the base order -> piece
        self.counts: dict[Peer, int] = {}  # pieces each peer has
        self.choking: set[Peer] = set()  # peers that choke us: their pieces are not available
        self._dirty = True
        self.missing = num_pieces - sum(self.have)

    # ------------------------------------------------------------ peers

    def add_peer(self, peer: Peer, bits: bytearray) -> None:
        if len(bits) != self.num_pieces:
            raise ValueError("bitfield size does not match")
        self.remove_peer(peer)
        self.peer_bits[peer] = bytearray(bits)
        self.peer_requests[peer] = set()
        self.counts[peer] = sum(bits)
        self._count_in(peer, 1)

    def _count_in(self, peer: Peer, sign: int) -> None:
        avail = self.availability
        for i, b in enumerate(self.peer_bits[peer]):
            if b:
                avail[i] += sign
        self._dirty = True

    def set_choking(self, peer: Peer, choking: bool) -> None:
        """The peer choked (or unchoked) us: its pieces leave (or rejoin) the availability."""
        if peer not in self.peer_bits or (peer in self.choking) == choking:
            return
        if choking:
            self.choking.add(peer)
            self._count_in(peer, -1)
        else:
            self.choking.discard(peer)
            self._count_in(peer, 1)

    def peer_has(self, peer: Peer, index: int) -> None:
        bits = self.peer_bits.get(peer)
        if bits is not None and 0 <= index < self.num_pieces and not bits[index]:
            bits[index] = 1
            self.counts[peer] += 1
            if peer not in self.choking:
                self._move(index, 1)

    def peer_lacks(self, peer: Peer, index: int) -> None:
        """The peer refused a piece it once offered: stop asking it for that one."""
        bits = self.peer_bits.get(peer)
        if bits is not None and 0 <= index < self.num_pieces and bits[index]:
            bits[index] = 0
            self.counts[peer] -= 1
            if peer not in self.choking:
                self._move(index, -1)

    def _move(self, index: int, delta: int) -> None:
        """Change a piece's availability by `delta`, moving its key in the sorted order."""
        avail = self.availability
        if not self._dirty and not self.have[index]:
            n, keys = self.num_pieces, self._keys
            old = avail[index] * n + self._rank[index]
            pos = bisect_left(keys, old)
            if pos < len(keys) and keys[pos] == old:
                del keys[pos]
            insort(keys, old + delta * n)
        avail[index] += delta

    def remove_peer(self, peer: Peer) -> list[int]:
        """Forget a peer; returns the pieces it had in flight (now free for others)."""
        if peer not in self.peer_bits:
            return []
        if peer not in self.choking:
            self._count_in(peer, -1)
        self.choking.discard(peer)
        self.counts.pop(peer, None)
        del self.peer_bits[peer]
        pending = self.peer_requests.pop(peer, set())
        for index in pending:
            asked = self.in_flight.get(index)
            if asked is not None:
                asked.discard(peer)
                if not asked:
                    del self.in_flight[index]
        self._dirty = True
        return sorted(pending)

    # ------------------------------------------------------------ picking

    def _wants_shuffle(self) -> bool:
        """Several peers, one of them a fellow downloader (a peer that lacks pieces)."""
        n = self.num_pieces
        return len(self.peer_bits) > 1 and any(count < n for count in self.counts.values())

    def _rebuild(self) -> None:
        n = self.num_pieces
        self._shuffled = self._wants_shuffle()
        if self._shuffled:
            self._at = [i for b in self._blocks for i in range(b * BLOCK, min(n, (b + 1) * BLOCK))]
        else:
            self._at = list(range(n))
        rank = self._rank
        for pos, i in enumerate(self._at):
            rank[i] = pos
        avail, have = self.availability, self.have
        self._keys = sorted(avail[i] * n + rank[i] for i in range(n) if not have[i])
        self._dirty = False

    def order(self) -> list[int]:
        """The missing pieces in the order `pick` considers them (rarest first)."""
        if self._dirty or self._shuffled != self._wants_shuffle():
            self._rebuild()
        n = self.num_pieces
        return [self._at[key % n] for key in self._keys]

    @property
    def endgame(self) -> bool:
        """Every missing piece has been asked for and few are left: duplicate requests finish the tail fast."""
        return 0 < self.missing <= min(len(self.in_flight), ENDGAME_PIECES)

    def pick(self, peer: Peer, n: int) -> list[int]:
        """Up to `n` pieces to request from `peer` now (and marks them requested)."""
        bits = self.peer_bits.get(peer)
        if bits is None or n <= 0 or self.missing == 0:
            return []
        if self._dirty or self._shuffled != self._wants_shuffle():
            self._rebuild()
        out: list[int] = []
        in_flight, at, count = self.in_flight, self._at, self.num_pieces
        # A seed is asked only for pieces no one else can give us (super-seeding from the
        # downloader's side): the seed's upload, the swarm's scarcest resource, then goes
        # to pieces the downloaders can trade. The endgame lifts this.
        spare_seed = self.seed_among_traders(peer)
        # keys are availability * count + rank: past `limit` only more common pieces follow.
        # Every unchoked seed adds 1 to every piece's availability, so "no one else" is
        # availability <= seeds (counting only seeds would deadlock once several seeds
        # hold the pieces a trader lacks too: none of them would be asked).
        seeds = sum(1 for p, c in self.counts.items() if c == count and p not in self.choking) if spare_seed else 0
        limit = (seeds + 1) * count if spare_seed and not self.endgame else (1 << 62)
        for key in self._keys:
            if key >= limit:
                break
            index = at[key % count]
            if index in in_flight or not bits[index]:
                continue
            out.append(index)
            if len(out) >= n:
                break
        for index in out:
            self._mark(peer, index)
        if len(out) < n and self.endgame:
            out += self._pick_endgame(peer, bits, n - len(out), seeds_only=spare_seed)
        return out

    def seed_among_traders(self, peer: Peer) -> bool:
        """`peer` has every piece and some peer that does not (and does not choke us) trades too."""
        n = self.num_pieces
        return self.counts.get(peer) == n and any(c < n for p, c in self.counts.items() if p not in self.choking)

    def release_from_seeds(self, peer: Peer, index: int) -> list[Peer]:
        """`peer` (not a seed, not choking us) just got `index`, which is requested only
        from seeds: free it from them (returns them, to CANCEL) so `peer` is asked."""
        asked = self.in_flight.get(index)
        n = self.num_pieces
        if (not asked or peer in asked or peer in self.choking or self.counts.get(peer, n) >= n
                or self.endgame or any(self.counts.get(p, 0) < n for p in asked)):
            return []
        seeds = sorted(asked, key=str)
        for seed in seeds:
            self._unmark(seed, index)
        return seeds

    def _pick_endgame(self, peer: Peer, bits: bytearray, n: int, seeds_only: bool = False) -> list[int]:
        """Duplicates of pieces in flight. `seeds_only`: `peer` is a seed in a swarm, and
        duplicates only what other seeds were asked for: a copy of a piece a fellow
        downloader is sending would be taken from the seed's upload, which the other
        downloaders are still waiting on (measured: ~32 such copies per downloader, 13%
        of the seed's upload in a 1 + 4 swarm)."""
        mine = self.peer_requests[peer]
        full = self.num_pieces
        counts = self.counts
        candidates = [i for i, asked in self.in_flight.items()
                      if bits[i] and i not in mine and len(asked) < ENDGAME_DUPLICATES
                      and not (seeds_only and any(counts.get(p, 0) < full for p in asked))]
        candidates.sort(key=lambda i: len(self.in_flight[i]))
        out = candidates[:n]
        for index in out:
            self._mark(peer, index)
        return out

    def claim(self, peer: Peer, index: int) -> None:
        """`peer` was asked for `index` outside `pick` (before the metainfo): count it in flight."""
        if not self.have[index]:
            self._mark(peer, index)

    def _mark(self, peer: Peer, index: int) -> None:
        self.in_flight.setdefault(index, set()).add(peer)
        self.peer_requests[peer].add(index)

    # ------------------------------------------------------------ outcomes

    def received(self, peer: Peer, index: int) -> list[Peer]:
        """A verified piece arrived from `peer`. Returns other peers to send CANCEL to."""
        self._unmark(peer, index)
        others = sorted(self.in_flight.pop(index, set()), key=str)
        for other in others:
            self.peer_requests.get(other, set()).discard(index)
        if not self.have[index]:
            if not self._dirty:
                n, keys = self.num_pieces, self._keys
                key = self.availability[index] * n + self._rank[index]
                pos = bisect_left(keys, key)
                if pos < len(keys) and keys[pos] == key:
                    del keys[pos]
            self.have[index] = 1
            self.missing -= 1
        return others

    def failed(self, peer: Peer, index: int) -> None:
        """The peer rejected the request or sent bad data: the piece is free again."""
        self._unmark(peer, index)

    def unverify(self, index: int) -> None:
        """A piece we thought we had turned out bad on disk: fetch it again."""
        if self.have[index]:
            self.have[index] = 0
            self.missing += 1
            self._dirty = True

    def _unmark(self, peer: Peer, index: int) -> None:
        self.peer_requests.get(peer, set()).discard(index)
        asked = self.in_flight.get(index)
        if asked is not None:
            asked.discard(peer)
            if not asked:
                del self.in_flight[index]

    @property
    def complete(self) -> bool:
        return self.missing == 0

    def have_count(self) -> int:
        return self.num_pieces - self.missing
