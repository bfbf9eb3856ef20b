"""Weighted node selection: send a command to "the best node of a namespace".

Pure core (`score_candidate`, `weighted_order`) and a trio adapter (`Selector`).

Score (documented in docs/OPERATIONS.md, "Weighted routing"): each part is in [0, 1],

    cpu        = 1 - max(cpu_percent / 100, load1 / cores)       (capabilities.headroom)
    memory     = memory_available / memory_total
    disk       = min(1, disk_free / 10 GiB)
    latency    = 100 / (100 + rtt_ms)              (rtt 0 ms -> 1.0, 100 ms -> 0.5)
    reputation = our reputation score of the peer  (punch_net.routing.reputation)

a part the peer did not report counts as 0.5 (neutral), and

    score = sum(weight_i * part_i) / sum(weight_i)

with the weights from the `[selection]` section of the config (defaults cpu 0.25,
memory 0.15, disk 0.10, latency 0.20, reputation 0.30). Candidates are then put in a
random order where each next pick is made with probability proportional to its score
(weighted sampling without replacement), so load spreads over good nodes instead of
piling on the single best one; a request that fails moves on to the next in that order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import trio
from libp2p.peer.peerinfo import PeerInfo

from punch_net import events as ev
from punch_net.api import Candidate, CommandFailed, NoCandidates, RouteResult
from punch_net.node import Node
from punch_net.routing.capabilities import CapabilityBook, fetch_capabilities, headroom
from punch_net.routing.reputation import ReputationStore

PARTS = ("cpu", "memory", "disk", "latency", "reputation")
DEFAULT_WEIGHTS = {"cpu": 0.25, "memory": 0.15, "disk": 0.10, "latency": 0.20, "reputation": 0.30}
NEUTRAL = 0.5
LATENCY_REF_MS = 100.0
MIN_SCORE = 0.01  # a candidate is never impossible to pick, only unlikely
CAPS_MAX_AGE = 120.0  # seconds before cached capabilities are fetched again
PING_MAX_AGE = 5.0  # a peer's RTT is measured again after this (not on every send)
PROVIDERS_MAX_AGE = 10.0  # a namespace's providers are looked up again after this
MAX_ATTEMPTS = 3


def candidate_json(c: Candidate) -> dict[str, object]:
    """A candidate rounded for events and humans."""
    return {"peer_id": c.peer_id, "score": round(c.score, 4),
            "parts": {k: round(v, 4) for k, v in c.parts.items()},
            "known": c.known, "rtt_ms": None if c.rtt_ms is None else round(c.rtt_ms, 3)}


def weights_from_config(cfg: Any) -> dict[str, float]:
    """`weight_cpu` ... `weight_reputation` from NodeConfig; negatives are refused."""
    out = {}
    for part in PARTS:
        value = float(getattr(cfg, f"weight_{part}", DEFAULT_WEIGHTS[part]))
        if value < 0:
            raise ValueError(f"weight_{part} must be >= 0 (got {value:g})")
        out[part] = value
    if sum(out.values()) <= 0:
        raise ValueError("at least one selection weight must be > 0")
    return out


def latency_part(rtt_ms: float | None) -> float | None:
    if rtt_ms is None or rtt_ms < 0:
        return None
    return LATENCY_REF_MS / (LATENCY_REF_MS + rtt_ms)


def score_candidate(peer_id: str, caps: dict[str, Any] | None, rtt_ms: float | None, reputation: float | None,
                    weights: dict[str, float] | None = None) -> Candidate:
    """The documented weighted score, with its parts (pure)."""
    w = weights or DEFAULT_WEIGHTS
    raw: dict[str, float | None] = dict(headroom(caps))
    raw["latency"] = latency_part(rtt_ms)
    raw["reputation"] = None if reputation is None else max(0.0, min(1.0, reputation))
    parts = {p: (NEUTRAL if raw[p] is None else float(raw[p])) for p in PARTS}  # type: ignore[arg-type]
    total = sum(w[p] for p in PARTS)
    score = sum(w[p] * parts[p] for p in PARTS) / total if total > 0 else NEUTRAL
    return Candidate(peer_id, score, parts, {p: raw[p] is not None for p in PARTS}, rtt_ms)


def weighted_order(cands: Sequence[Candidate], rng: random.Random | None = None) -> list[Candidate]:
    """Weighted random order without replacement: P(first = c) = score_c / sum(scores),
    then the same among the rest (Efraimidis–Spirakis keys u ** (1 / w))."""
    r = rng or random.Random()
    keyed = [(r.random() ** (1.0 / max(c.score, MIN_SCORE)), c) for c in cands]
    keyed.sort(key=lambda kc: kc[0], reverse=True)
    return [c for _, c in keyed]


def pick_probabilities(cands: Sequence[Candidate]) -> dict[str, float]:
    """Chance of each candidate being tried first (for the UI and the tests)."""
    total = sum(max(c.score, MIN_SCORE) for c in cands)
    return {c.peer_id: max(c.score, MIN_SCORE) / total for c in cands} if total else {}


# ---------------------------------------------------------------- trio adapter


class Selector:
    """Weighted routing for one node: its reputation store and capability book in, a peer
    chosen per command out. Keeps its own short-lived caches (pings, provider lookups)."""

    def __init__(self, node: Node, reputation: ReputationStore, book: CapabilityBook) -> None:
        self.node = node
        self.reputation = reputation
        self.book = book
        self._pings: dict[str, tuple[float, float | None]] = {}
        self._providers: dict[str, tuple[float, list[PeerInfo]]] = {}

    async def _measure(self, peer: str, timeout: float) -> tuple[dict[str, Any] | None, float | None]:
        """Capabilities (cached or fetched) and a recent ping RTT (at most PING_MAX_AGE old) for
        one peer; the RTT is None when the last ping failed."""
        caps = self.book.get(peer, CAPS_MAX_AGE)
        last = self._pings.get(peer)
        rtt: float | None = last[1] if last is not None and time.monotonic() - last[0] < PING_MAX_AGE else None
        with trio.move_on_after(timeout):
            if last is None or time.monotonic() - last[0] >= PING_MAX_AGE:
                try:
                    rtt = (await self.node.ping(peer, timeout)) * 1000
                    self.reputation.record_latency(peer, rtt)
                except Exception:
                    rtt = None
                self._pings[peer] = (time.monotonic(), rtt)
            if caps is None:
                try:
                    caps = await fetch_capabilities(self.node, self.book, peer, timeout)
                except Exception:
                    caps = self.book.get(peer)  # stale is better than nothing
        return caps, rtt

    async def rank_peers(self, peers: Sequence[str], timeout: float = 5.0) -> list[Candidate]:
        """Score each peer (concurrently): capabilities, ping latency, reputation."""
        cfg = self.node.config
        weights = weights_from_config(cfg)
        timeout = min(timeout, cfg.request_timeout)  # a frozen peer must not stall every send
        found: dict[str, Candidate] = {}

        async def one(peer: str) -> None:
            caps, rtt = await self._measure(peer, timeout)
            found[peer] = score_candidate(peer, caps, rtt, self.reputation.score(peer), weights)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(one, peer)
        return sorted(found.values(), key=lambda c: -c.score)

    async def candidates(self, namespace: str, timeout: float = 5.0) -> list[Candidate]:
        """Providers of `namespace` that we can connect to, scored (the DHT lookup is reused for
        PROVIDERS_MAX_AGE seconds, so a stream of sends does not cost one lookup each)."""
        node = self.node
        cached = self._providers.get(namespace)
        if cached is not None and time.monotonic() - cached[0] < PROVIDERS_MAX_AGE:
            infos = cached[1]
        else:
            infos = await node.find_peers(namespace)
            if infos:  # an empty answer is asked again next time
                self._providers[namespace] = (time.monotonic(), infos)
        reachable: list[str] = []
        connected = {str(p) for p in node.connected_peers()}

        async def connect(info: PeerInfo) -> None:
            peer = str(info.peer_id)
            if peer not in connected:
                try:
                    await node.connect_peer(info)
                except Exception:
                    self.reputation.record_failure(peer)
                    return
            reachable.append(peer)

        async with trio.open_nursery() as nursery:
            for info in infos:
                nursery.start_soon(connect, info)
        return await self.rank_peers(reachable, timeout)

    async def send_to_best(self, namespace: str, command: str, args: dict[str, Any] | None = None, *,
                           timeout: float | None = None, max_attempts: int = MAX_ATTEMPTS,
                           rng: random.Random | None = None) -> RouteResult:
        """Send `command` to a node of `namespace` picked by weighted score; on failure (error
        transport, timeout) fail over to the next in the weighted order, up to `max_attempts`.
        An error *reply* from the peer (e.g. bad arguments) is the answer, not a failover case."""
        node = self.node
        cands = await self.candidates(namespace)
        if not cands:
            raise NoCandidates(f"no reachable node announces {namespace!r}")
        order = weighted_order(cands, rng)
        attempts: list[dict[str, object]] = []
        for cand in order[:max(1, max_attempts)]:
            started = time.perf_counter()
            try:
                result = await node.send_command(cand.peer_id, command, args or {}, timeout)
            except CommandFailed:
                raise
            except Exception as exc:
                attempts.append({"peer_id": cand.peer_id, "ok": False, "error": str(exc),
                                 "ms": round((time.perf_counter() - started) * 1000, 3)})
                continue
            attempts.append({"peer_id": cand.peer_id, "ok": True,
                             "ms": round((time.perf_counter() - started) * 1000, 3)})
            node.bus.publish(ev.Routed(namespace=namespace, command=command, peer_id=cand.peer_id, ok=True,
                                       attempts=attempts, candidates=[candidate_json(c) for c in cands]))
            return RouteResult(cand.peer_id, result, attempts, cands)
        node.bus.publish(ev.Routed(namespace=namespace, command=command, peer_id="", ok=False,
                                   attempts=attempts, candidates=[candidate_json(c) for c in cands]))
        raise NoCandidates(f"{command} to {namespace!r}: all {len(attempts)} attempts failed "
                           f"(last: {attempts[-1]['error'] if attempts else 'none'})")
