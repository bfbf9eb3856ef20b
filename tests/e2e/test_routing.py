"""Weighted routing over three real listener processes with different (simulated) loads.

PUNCH_CAPS_OVERRIDE lets one machine play nodes of different sizes: each listener reports
the CPU, memory and disk figures given to it (flagged "simulated"). The dialer (`--weighted`)
sends each message to one node picked with probability proportional to its score and
prints a `routed` event with every candidate's score and parts."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from monitor_helpers import PunchFactory

pytestmark = pytest.mark.slow

GIB = 1024**3
LOADS = {
    "idle": {"cores": 8, "cpu_percent": 2.0, "load": [0.1, 0.1, 0.1], "memory_total": 64 * GIB,
             "memory_available": 60 * GIB, "disk_free": 500 * GIB},
    "medium": {"cores": 2, "cpu_percent": 50.0, "load": [1.0, 1.0, 1.0], "memory_total": 8 * GIB,
               "memory_available": 4 * GIB, "disk_free": 5 * GIB},
    "busy": {"cores": 2, "cpu_percent": 97.0, "load": [7.5, 7.0, 6.0], "memory_total": 8 * GIB,
             "memory_available": GIB // 2, "disk_free": GIB // 4},
}
SAMPLES = 120  # enough draws that the ordering check is not a coin toss (4 sigma at p=0.3 is ~0.17)


def full_rounds(dialer: Any, after: int = 0) -> list[dict[str, Any]]:
    return [e for e in dialer.events[after:] if e.get("event") == "routed" and len(e["candidates"]) == 3]


def test_weighted_routing_picks_by_score_and_fails_over(punch: PunchFactory, tmp_path: Path) -> None:
    server = punch.server()
    nodes = {name: punch.start("listener", "--bootstrap", server.addr, name=name,
                               env={"PUNCH_CAPS_OVERRIDE": json.dumps(caps)})
             for name, caps in LOADS.items()}
    for proc in nodes.values():
        proc.wait_event("registered", 60)
    by_id = {proc.peer_id: name for name, proc in nodes.items()}
    cfg = tmp_path / "dialer.toml"
    cfg.write_text("[node]\nrequest_timeout = 3.0\n")
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--weighted", "--interval", "0.05",
                         "--config", str(cfg))
    dialer.wait_event("routed", 90, pred=lambda e: len(e["candidates"]) == 3)
    start = dialer.mark()
    dialer.wait_event("routed", 180, after=start, pred=lambda e, s=start: len(full_rounds(dialer, s)) >= SAMPLES)
    rounds = full_rounds(dialer, start)[:SAMPLES]
    assert all(r["ok"] and len(r["attempts"]) == 1 for r in rounds), dialer.describe()

    # The parts say why: the idle node has the CPU, memory and disk the busy one lacks.
    parts = {by_id[c["peer_id"]]: c["parts"] for c in rounds[-1]["candidates"]}
    assert parts["idle"]["cpu"] > 0.95 and parts["busy"]["cpu"] == 0.0
    assert parts["idle"]["memory"] > parts["medium"]["memory"] > parts["busy"]["memory"]
    assert parts["idle"]["disk"] == 1.0 and parts["busy"]["disk"] < 0.05

    # Picks are spread in proportion to the scores, not all on the best node.
    picks = {name: 0 for name in LOADS}
    expected = {name: 0.0 for name in LOADS}
    for r in rounds:
        picks[by_id[r["peer_id"]]] += 1
        total = sum(c["score"] for c in r["candidates"])
        for c in r["candidates"]:
            expected[by_id[c["peer_id"]]] += c["score"] / total / len(rounds)
    assert expected["idle"] > expected["medium"] > expected["busy"]
    for name in LOADS:
        assert picks[name] / len(rounds) == pytest.approx(expected[name], abs=0.25), (picks, expected)
    assert picks["idle"] > picks["busy"] and picks["busy"] < len(rounds) / 2, (picks, expected)
    rep_before = parts["idle"]["reputation"]

    # Freeze the idle node: its requests time out and the dialer fails over to the next one.
    idle = nodes["idle"]
    idle.send_signal(signal.SIGSTOP)
    try:
        mark = dialer.mark()

        def failed_over(e: dict[str, Any]) -> bool:
            a = e["attempts"]
            return (e["ok"] and len(a) >= 2 and a[0]["peer_id"] == idle.peer_id and not a[0]["ok"]
                    and a[-1]["ok"] and a[-1]["peer_id"] != idle.peer_id)

        got = dialer.wait_event("routed", 120, pred=failed_over, after=mark)
        assert "no reply" in got["attempts"][0]["error"] or "timed out" in got["attempts"][0]["error"]
        later = [e for e in dialer.events[mark:] if e.get("event") == "routed"]
        assert all(e["ok"] for e in later), "every message still got an answer"
        dialer.wait_event("routed", 60, after=dialer.mark())  # the next pick sees the timeout
        newest = next(c for c in full_rounds(dialer)[-1]["candidates"] if c["peer_id"] == idle.peer_id)
        assert newest["parts"]["reputation"] < rep_before
    finally:
        idle.send_signal(signal.SIGCONT)
