"""Reputation and capability/selection maths: pure functions, no sockets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from punch_net.routing import reputation as rep
from punch_net.routing.capabilities import CapabilityBook, headroom
from punch_net.routing.reputation import PeerRecord, ReputationStore, reputation_score
from punch_net.routing.selection import (
    DEFAULT_WEIGHTS,
    Candidate,
    pick_probabilities,
    score_candidate,
    weighted_order,
    weights_from_config,
)


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------ reputation


def test_unknown_peer_is_neutral() -> None:
    assert reputation_score(PeerRecord()) == pytest.approx(0.5)
    assert ReputationStore().score("nobody") == pytest.approx(0.5)


def test_formula_matches_the_documentation() -> None:
    rec = PeerRecord(successes=8, failures=1, timeouts=1, bad_data=0, latency_ms=100)
    reliability = (8 + 1) / (8 + (1 + 2 * 1) + 2)
    latency = 0.8 + 0.2 * 100 / (100 + 100)
    assert reputation_score(rec) == pytest.approx(reliability * latency)


def test_successes_raise_failures_lower_and_bad_data_hurts_most() -> None:
    clock = Clock()
    store = ReputationStore(clock=clock)
    for _ in range(10):
        store.record_success("good")
    store.record_failure("flaky")
    store.record_timeout("slow")
    store.record_bad_data("liar")
    scores = {p: store.score(p) for p in ("good", "flaky", "slow", "liar")}
    assert scores["good"] > 0.9
    assert 0.5 > scores["flaky"] > scores["slow"] > scores["liar"]
    assert scores["liar"] == pytest.approx(1 / 7)  # (0+1) / (0 + 5 + 2)


def test_decay_halves_evidence_per_half_life() -> None:
    clock = Clock()
    store = ReputationStore(clock=clock, half_life=100.0)
    for _ in range(8):
        store.record_failure("p")
    before = store.score("p")
    clock.t += 100.0
    rec = store.record("p")
    assert rec is not None and rec.failures == pytest.approx(4.0)
    clock.t += 1000.0
    assert store.score("p") > before
    assert store.score("p") == pytest.approx(0.5, abs=0.01)  # forgotten: back to neutral


def test_latency_is_a_bounded_moving_average() -> None:
    store = ReputationStore()
    store.record_success("p", latency_ms=100)
    store.record_success("p", latency_ms=200)
    assert store.latency_ms("p") == pytest.approx(0.7 * 100 + 0.3 * 200)
    assert rep.latency_factor(None) == 1.0
    assert rep.latency_factor(0) == pytest.approx(1.0)
    assert rep.latency_factor(1e9) == pytest.approx(0.8, abs=1e-6)


def test_store_persists_across_restarts(tmp_path: Path) -> None:
    store = rep.open_store(tmp_path)
    store.record_success("a", 10)
    store.record_bad_data("b", 2)
    assert store.save()
    assert not store.save()  # nothing changed: no write
    path = tmp_path / rep.FILE_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    again = rep.open_store(tmp_path)
    assert again.score("a") == pytest.approx(store.score("a"), abs=1e-3)
    assert again.details("b")["bad_data"] == pytest.approx(2.0, abs=1e-3)


def test_damaged_file_is_kept_aside_not_lost(tmp_path: Path) -> None:
    path = tmp_path / rep.FILE_NAME
    path.write_text('{"version": 1, "peers": {"x": {"successes": -3}}}')
    store = rep.open_store(tmp_path)
    assert store.peers == {} and "unreadable" in store.load_error
    assert (tmp_path / (rep.FILE_NAME + ".bad")).exists()
    path.write_text("not json")
    assert "unreadable" in rep.open_store(tmp_path).load_error


def test_store_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rep, "MAX_PEERS", 5)
    store = ReputationStore()
    for i in range(5):
        for _ in range(i + 1):
            store.record_success(f"p{i}")
    store.record_success("new")
    assert len(store.peers) == 5 and "p0" not in store.peers and "new" in store.peers


def test_metrics_hook_sees_every_observation() -> None:
    seen: list[tuple[str, str]] = []
    store = ReputationStore(on_record=lambda p, k: seen.append((p, k)))
    store.record_success("a")
    store.record_timeout("a")
    store.record_bad_data("b")
    assert seen == [("a", "success"), ("a", "timeout"), ("b", "bad_data")]
    json.dumps(store.to_json())


# ------------------------------------------------------------------ capabilities


CAPS_IDLE = {"cores": 4, "cpu_percent": 10.0, "load": [0.4, 0.3, 0.2], "memory_total": 100,
             "memory_available": 80, "disk_free": 20 * 1024**3}
CAPS_BUSY = {"cores": 2, "cpu_percent": 30.0, "load": [3.0, 2.0, 1.0], "memory_total": 100,
             "memory_available": 10, "disk_free": 1024**3}


def test_headroom_maths() -> None:
    idle = headroom(CAPS_IDLE)
    assert idle == {"cpu": pytest.approx(0.9), "memory": pytest.approx(0.8), "disk": 1.0}
    busy = headroom(CAPS_BUSY)
    assert busy["cpu"] == 0.0  # load 3 on 2 cores counts as fully busy, whatever cpu% says
    assert busy["memory"] == pytest.approx(0.1)
    assert busy["disk"] == pytest.approx(0.1)
    assert headroom(None) == {"cpu": None, "memory": None, "disk": None}
    assert headroom({"cpu_percent": "lots", "memory_total": 0, "load": ["x"]}) == {
        "cpu": None, "memory": None, "disk": None}


def test_capability_book_subscriptions_expire() -> None:
    clock = Clock()
    book = CapabilityBook(clock=clock)
    book.asked("a")
    book.asked("b")
    book.asked("b", subscribe=False)
    assert book.live_subscribers() == ["a"]
    clock.t += 601
    assert book.live_subscribers() == []
    book.store("a", {"cores": 1})
    clock.t += 10
    assert book.get("a") == {"cores": 1} and book.get("a", max_age=5) is None


# ------------------------------------------------------------------ selection


def test_score_is_the_weighted_mean_of_its_parts() -> None:
    c = score_candidate("p", CAPS_IDLE, rtt_ms=100.0, reputation=0.6)
    assert c.parts == {"cpu": pytest.approx(0.9), "memory": pytest.approx(0.8), "disk": 1.0,
                       "latency": pytest.approx(0.5), "reputation": pytest.approx(0.6)}
    expected = sum(DEFAULT_WEIGHTS[k] * v for k, v in c.parts.items()) / sum(DEFAULT_WEIGHTS.values())
    assert c.score == pytest.approx(expected)
    assert all(c.known.values())


def test_unknown_parts_are_neutral_and_flagged() -> None:
    c = score_candidate("p", None, None, None)
    assert c.score == pytest.approx(0.5) and not any(c.known.values())


def test_weights_change_the_ranking() -> None:
    fast_busy = ("fast", CAPS_BUSY, 1.0, 0.5)
    slow_idle = ("slow", CAPS_IDLE, 400.0, 0.5)
    cpu_heavy = {"cpu": 1.0, "memory": 0, "disk": 0, "latency": 0, "reputation": 0}
    lat_heavy = {"cpu": 0, "memory": 0, "disk": 0, "latency": 1.0, "reputation": 0}
    assert score_candidate(*slow_idle, cpu_heavy).score > score_candidate(*fast_busy, cpu_heavy).score
    assert score_candidate(*fast_busy, lat_heavy).score > score_candidate(*slow_idle, lat_heavy).score


class _Cfg:
    weight_cpu = 1.0
    weight_memory = 0.0
    weight_disk = 0.0
    weight_latency = 0.0
    weight_reputation = -1.0


def test_weights_from_config_refuse_negatives() -> None:
    with pytest.raises(ValueError, match="weight_reputation"):
        weights_from_config(_Cfg())


def test_weighted_order_is_proportional_to_score() -> None:
    cands = [Candidate("a", 0.6, {}, {}), Candidate("b", 0.3, {}, {}), Candidate("c", 0.1, {}, {})]
    rng = random.Random(7)
    n = 20_000
    first = {"a": 0, "b": 0, "c": 0}
    for _ in range(n):
        order = weighted_order(cands, rng)
        assert sorted(c.peer_id for c in order) == ["a", "b", "c"]  # failover covers everyone
        first[order[0].peer_id] += 1
    probs = pick_probabilities(cands)
    for peer, p in probs.items():
        assert first[peer] / n == pytest.approx(p, abs=0.015)


def test_zero_score_is_unlikely_not_impossible() -> None:
    cands = [Candidate("a", 1.0, {}, {}), Candidate("z", 0.0, {}, {})]
    rng = random.Random(1)
    firsts = [weighted_order(cands, rng)[0].peer_id for _ in range(5000)]
    assert 0 < firsts.count("z") < 150
