"""Weighted node selection: send a command to "the best node of a namespace".

Pure core (`score_candidate`, `weighted_order`) and a trio adapter (`send_to_best`).

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from punch_net.routing.capabilities import headroom

if TYPE_CHECKING:
    from punch_net.node import Node

PARTS = ("cpu", "memory", "disk", "latency", "reputation")
DEFAULT_WEIGHTS = {"cpu": 0.25, "memory": 0.15, "disk": 0.10, "latency": 0.20, "reputation": 0.30}
NEUTRAL = 0.5
LATENCY_REF_MS = 100.0
MIN_SCORE = 0.01  # a candidate is never impossible to pick, only unlikely
CAPS_MAX_AGE = 120.0  # seconds before cached capabilities are fetched again
PING_MAX_AGE = 5.0  # a peer's RTT is measured again after this (not on every send)
PROVIDERS_MAX_AGE = 10.0  # a namespace's providers are looked up again after this
MAX_ATTEMPTS = 3


class NoCandidates(Exception):
    """Nobody announces the namespace, or every candidate failed."""


@dataclass(frozen=True)
class Candidate:
    """One scored peer: `parts` are the normalised inputs, `score` their weighted mean."""

    peer_id: str
    score: float
    parts: dict[str, float]
    known: dict[str, bool]  # which parts came from real data (False: neutral 0.5)
    rtt_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "score": round(self.score, 4),
                "parts": {k: round(v, 4) for k, v in self.parts.items()},
                "known": self.known, "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3)}


@dataclass
class RouteResult:
    peer_id: str
    result: Any
    attempts: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)


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


def _cache(node: Node, name: str) -> dict[str, Any]:
    """Per-node scratch caches (pings, provider lookups), kept on the node itself."""
    caches: dict[str, dict[str, Any]] = node.__dict__.setdefault("_selection_caches", {})
    return caches.setdefault(name, {})


async def _measure(node: Node, peer: str, timeout: float) -> tuple[dict[str, Any] | None, float | None]:
    """Capabilities (cached or fetched) and a recent ping RTT (at most PING_MAX_AGE old) for
    one peer; the RTT is None when the last ping failed."""
    from punch_net.routing import capabilities as caps_mod

    caps = node.caps_book.get(peer, CAPS_MAX_AGE)
    pings = _cache(node, "pings")
    last = pings.get(peer)
    rtt: float | None = last[1] if last is not None and time.monotonic() - last[0] < PING_MAX_AGE else None
    with trio.move_on_after(timeout):
        if last is None or time.monotonic() - last[0] >= PING_MAX_AGE:
            try:
                rtt = (await node.ping(peer, timeout)) * 1000
                node.reputation.record_latency(peer, rtt)
            except Exception:
                rtt = None
            pings[peer] = (time.monotonic(), rtt)
        if caps is None:
            try:
                caps = await caps_mod.fetch(node, peer, timeout)
            except Exception:
                caps = node.caps_book.get(peer)  # stale is better than nothing
    return caps, rtt


async def rank_peers(node: Node, peers: Sequence[str], timeout: float = 5.0) -> list[Candidate]:
    """Score each peer (concurrently): capabilities, ping latency, reputation."""
    weights = weights_from_config(node.config)
    timeout = min(timeout, node.config.request_timeout)  # a frozen peer must not stall every send
    found: dict[str, Candidate] = {}

    async def one(peer: str) -> None:
        caps, rtt = await _measure(node, peer, timeout)
        found[peer] = score_candidate(peer, caps, rtt, node.reputation.score(peer), weights)

    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(one, peer)
    return sorted(found.values(), key=lambda c: -c.score)


async def candidates(node: Node, namespace: str, timeout: float = 5.0) -> list[Candidate]:
    """Providers of `namespace` that we can connect to, scored (the DHT lookup is reused for
    PROVIDERS_MAX_AGE seconds, so a stream of sends does not cost one lookup each)."""
    cached = _cache(node, "providers").get(namespace)
    if cached is not None and time.monotonic() - cached[0] < PROVIDERS_MAX_AGE:
        infos = cached[1]
    else:
        infos = await node.find_peers(namespace)
        if infos:  # an empty answer is asked again next time
            _cache(node, "providers")[namespace] = (time.monotonic(), infos)
    reachable: list[str] = []
    connected = {str(p) for p in node.connected_peers()}

    async def connect(info: Any) -> None:
        peer = str(info.peer_id)
        if peer not in connected:
            try:
                await node.connect_peer(info)
            except Exception:
                node.reputation.record_failure(peer)
                return
        reachable.append(peer)

    async with trio.open_nursery() as nursery:
        for info in infos:
            nursery.start_soon(connect, info)
    return await rank_peers(node, reachable, timeout)


async def send_to_best(node: Node, namespace: str, command: str, args: dict[str, Any] | None = None, *,
                       timeout: float | None = None, max_attempts: int = MAX_ATTEMPTS,
                       rng: random.Random | None = None) -> RouteResult:
    """Send `command` to a node of `namespace` picked by weighted score; on failure (error
    transport, timeout) fail over to the next in the weighted order, up to `max_attempts`.
    An error *reply* from the peer (e.g. bad arguments) is the answer, not a failover case."""
    from punch_net import events as ev
    from punch_net.node import CommandFailed

    cands = await candidates(node, namespace)
    if not cands:
        raise NoCandidates(f"no reachable node announces {namespace!r}")
    order = weighted_order(cands, rng)
    attempts: list[dict[str, Any]] = []
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
                                   attempts=attempts, candidates=[c.to_json() for c in cands]))
        return RouteResult(cand.peer_id, result, attempts, cands)
    node.bus.publish(ev.Routed(namespace=namespace, command=command, peer_id="", ok=False,
                               attempts=attempts, candidates=[c.to_json() for c in cands]))
    raise NoCandidates(f"{command} to {namespace!r}: all {len(attempts)} attempts failed "
                       f"(last: {attempts[-1]['error'] if attempts else 'none'})")
