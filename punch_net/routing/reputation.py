"""Per-peer reputation: how much this node trusts each peer it has worked with.

Pure core (`PeerRecord`, `reputation_score`) plus a small store that persists to
`<data dir>/reputation.json` (atomic writes) so trust survives restarts.

Formula (documented in docs/OPERATIONS.md, "Reputation"):

* Every observation adds to an exponentially decaying tally. Before an update or a
  read, each tally is multiplied by ``0.5 ** (elapsed / half_life)`` (default half-life
  one hour), so a peer that misbehaved yesterday is judged on today's behaviour.
* ``bad = failures + 2 * timeouts + 5 * bad_data`` (a corrupt torrent piece is much worse
  than a refused request; a silent peer wastes our time more than a quick error).
* ``reliability = (successes + 1) / (successes + bad + 2)`` — a Beta(1, 1) prior, so an
  unknown peer starts at 0.5 and a handful of observations cannot push it to 0 or 1.
* Latency is an exponentially weighted moving average (alpha 0.3) of observed round trips;
  ``latency_factor = 0.8 + 0.2 * 100 / (100 + latency_ms)`` (1.0 when unknown), so a slow
  peer loses at most 20 %.
* ``score = reliability * latency_factor``, in [0, 1].
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from punch_net.config import atomic_write

DEFAULT_HALF_LIFE = 3600.0
FAILURE_WEIGHT = 1.0
TIMEOUT_WEIGHT = 2.0
BAD_DATA_WEIGHT = 5.0
LATENCY_ALPHA = 0.3
LATENCY_REF_MS = 100.0
LATENCY_SHARE = 0.2
MAX_PEERS = 10_000  # the store forgets the least-known peers beyond this
FILE_NAME = "reputation.json"
FILE_VERSION = 1
KINDS = ("success", "failure", "timeout", "bad_data")


@dataclass
class PeerRecord:
    """Decayed tallies for one peer; `updated` is the unix time they were last decayed to."""

    successes: float = 0.0
    failures: float = 0.0
    timeouts: float = 0.0
    bad_data: float = 0.0
    latency_ms: float | None = None
    updated: float = 0.0
    first_seen: float = 0.0

    def decay_to(self, now: float, half_life: float) -> None:
        """Age the tallies to `now` (never backwards)."""
        if self.updated and now > self.updated and half_life > 0:
            factor = 0.5 ** ((now - self.updated) / half_life)
            self.successes *= factor
            self.failures *= factor
            self.timeouts *= factor
            self.bad_data *= factor
        self.updated = max(self.updated, now)
        if not self.first_seen:
            self.first_seen = now

    @property
    def bad(self) -> float:
        return FAILURE_WEIGHT * self.failures + TIMEOUT_WEIGHT * self.timeouts + BAD_DATA_WEIGHT * self.bad_data

    @property
    def evidence(self) -> float:
        return self.successes + self.failures + self.timeouts + self.bad_data


def reliability(rec: PeerRecord) -> float:
    return (rec.successes + 1.0) / (rec.successes + rec.bad + 2.0)


def latency_factor(latency_ms: float | None) -> float:
    if latency_ms is None or latency_ms < 0 or math.isnan(latency_ms):
        return 1.0
    return (1.0 - LATENCY_SHARE) + LATENCY_SHARE * LATENCY_REF_MS / (LATENCY_REF_MS + latency_ms)


def reputation_score(rec: PeerRecord) -> float:
    """The documented score in [0, 1]; 0.5 for a peer we know nothing about."""
    return reliability(rec) * latency_factor(rec.latency_ms)


def ewma(old: float | None, sample: float, alpha: float = LATENCY_ALPHA) -> float:
    return sample if old is None else (1 - alpha) * old + alpha * sample


@dataclass
class ReputationStore:
    """All peers' records; `path=None` keeps them in memory only (ephemeral nodes).

    Call the `record_*` methods from anywhere in the node (they are synchronous and
    cheap); `save()` writes atomically and only when something changed."""

    path: Path | None = None
    half_life: float = DEFAULT_HALF_LIFE
    clock: Callable[[], float] = time.time
    peers: dict[str, PeerRecord] = field(default_factory=dict)
    dirty: bool = False
    load_error: str = ""
    # Called with (peer, kind) after every observation (metrics hook).
    on_record: Callable[[str, str], None] | None = None

    # ------------------------------------------------------------- observations

    def _rec(self, peer: object) -> PeerRecord:
        key = str(peer)
        rec = self.peers.get(key)
        now = self.clock()
        if rec is None:
            if len(self.peers) >= MAX_PEERS:
                self._evict()
            rec = self.peers[key] = PeerRecord(updated=now, first_seen=now)
        rec.decay_to(now, self.half_life)
        self.dirty = True
        return rec

    def _notify(self, peer: object, kind: str) -> None:
        if self.on_record is not None:
            self.on_record(str(peer), kind)

    def record_success(self, peer: object, latency_ms: float | None = None) -> None:
        rec = self._rec(peer)
        rec.successes += 1
        if latency_ms is not None:
            rec.latency_ms = ewma(rec.latency_ms, max(0.0, latency_ms))
        self._notify(peer, "success")

    def record_failure(self, peer: object) -> None:
        self._rec(peer).failures += 1
        self._notify(peer, "failure")

    def record_timeout(self, peer: object) -> None:
        self._rec(peer).timeouts += 1
        self._notify(peer, "timeout")

    def record_bad_data(self, peer: object, count: float = 1.0) -> None:
        """E.g. a torrent piece whose hash did not match: heavily penalised."""
        self._rec(peer).bad_data += max(0.0, count)
        self._notify(peer, "bad_data")

    def record_latency(self, peer: object, latency_ms: float) -> None:
        rec = self._rec(peer)
        rec.latency_ms = ewma(rec.latency_ms, max(0.0, latency_ms))

    # ------------------------------------------------------------- reads

    def record(self, peer: object) -> PeerRecord | None:
        rec = self.peers.get(str(peer))
        if rec is not None:
            rec.decay_to(self.clock(), self.half_life)
        return rec

    def score(self, peer: object) -> float:
        rec = self.record(peer)
        return reputation_score(rec) if rec is not None else reputation_score(PeerRecord())

    def latency_ms(self, peer: object) -> float | None:
        rec = self.peers.get(str(peer))
        return rec.latency_ms if rec is not None else None

    def details(self, peer: object) -> dict[str, Any]:
        """The score and every term of it, for the UI ("why this number")."""
        rec = self.record(peer) or PeerRecord()
        return {
            "peer_id": str(peer),
            "score": round(reputation_score(rec), 4),
            "reliability": round(reliability(rec), 4),
            "latency_factor": round(latency_factor(rec.latency_ms), 4),
            "successes": round(rec.successes, 3),
            "failures": round(rec.failures, 3),
            "timeouts": round(rec.timeouts, 3),
            "bad_data": round(rec.bad_data, 3),
            "latency_ms": None if rec.latency_ms is None else round(rec.latency_ms, 3),
            "first_seen": rec.first_seen or None,
            "updated": rec.updated or None,
        }

    def snapshot(self) -> list[dict[str, Any]]:
        return sorted((self.details(p) for p in list(self.peers)), key=lambda d: -d["score"])

    def _evict(self) -> None:
        """Forget the peer we know least about (smallest decayed evidence, then oldest)."""
        now = self.clock()
        for rec in self.peers.values():
            rec.decay_to(now, self.half_life)
        victim = min(self.peers, key=lambda p: (self.peers[p].evidence, self.peers[p].updated))
        del self.peers[victim]

    # ------------------------------------------------------------- persistence

    def to_json(self) -> dict[str, Any]:
        return {"version": FILE_VERSION, "half_life": self.half_life,
                "peers": {p: asdict(r) for p, r in self.peers.items()}}

    def load(self) -> None:
        """Read the file if there is one; a damaged file is set aside (not lost) and we
        start empty, with `load_error` saying why."""
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            peers = parse_peers(data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            self.load_error = f"{self.path}: unreadable ({exc}); kept as {self.path.name}.bad"
            try:
                self.path.replace(self.path.with_name(self.path.name + ".bad"))
            except OSError:
                pass
            return
        self.peers.update(peers)

    def save(self) -> bool:
        if self.path is None or not self.dirty:
            return False
        atomic_write(self.path, json.dumps(self.to_json(), separators=(",", ":")).encode(), mode=0o600)
        self.dirty = False
        return True


def parse_peers(data: Any) -> dict[str, PeerRecord]:
    """Validate a reputation file's content; raises ValueError on anything unexpected."""
    if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
        raise ValueError("unknown format")
    peers = data.get("peers")
    if not isinstance(peers, dict):
        raise ValueError("no peers table")
    out: dict[str, PeerRecord] = {}
    names = {f for f in PeerRecord.__dataclass_fields__}
    for peer, raw in list(peers.items())[:MAX_PEERS]:
        if not isinstance(raw, dict) or set(raw) - names:
            raise ValueError(f"bad record for {peer}")
        rec = PeerRecord(**raw)
        for name in ("successes", "failures", "timeouts", "bad_data", "updated", "first_seen"):
            value = getattr(rec, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 or math.isnan(value):
                raise ValueError(f"bad {name} for {peer}")
        if rec.latency_ms is not None and not isinstance(rec.latency_ms, int | float):
            raise ValueError(f"bad latency for {peer}")
        out[str(peer)] = rec
    return out


def open_store(data_dir: Path | None, half_life: float = DEFAULT_HALF_LIFE) -> ReputationStore:
    """The node's store: persisted in `data_dir`, or in memory when it is None (ephemeral)."""
    store = ReputationStore(path=data_dir / FILE_NAME if data_dir is not None else None, half_life=half_life)
    store.load()
    return store
