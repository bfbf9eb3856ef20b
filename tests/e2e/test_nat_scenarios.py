"""NAT traversal, proven on a real NAT: punch processes in network namespaces behind
nftables masquerade (see rig.py). Each test is one scenario from the NAT issue."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from nat_harness import Punch, is_kind, relay_addr, start_dialer, start_listener, start_relay, tail
from rig import NAT_WAN

pytestmark = pytest.mark.slow
PROBE = str(Path(__file__).parents[1] / "support" / "dial_probe.py")


def test_listener_behind_nat_reached_through_relay(make_rig, tmp_path: Path) -> None:
    """(1) Listener behind NAT A, dialer public: found through the DHT only, answered via the relay."""
    rig = make_rig()
    relay = start_relay(rig, tmp_path / "relay", "--relay-reservation-ttl", "6")  # short: see it renewed
    rid = relay.peer_id
    # --no-hole-punch keeps every reply on the relay (the reversal is covered by scenario 2's control)
    lis = start_listener(rig, "a", rid, "s1", "--no-hole-punch")
    assert lis.wait_for(is_kind("reachability"), 90, "reachability verdict")["status"] == "private"
    res = lis.wait_for(is_kind("reservation"), 90, "reservation")
    assert res["relay"] == rid and res["renewal"] is False and 3 < res["expires"] - time.time() < 8
    renewed = lis.wait_for(is_kind("reservation", renewal=True), 15, "renewal before expiry")
    assert renewed["expires"] > res["expires"] and renewed["_t"] - res["_t"] < 6
    circuit = res["addrs"][0]
    assert circuit.startswith(relay_addr(rid)) and "/p2p-circuit/p2p/" in circuit
    # the provider record made after the reservation carries the circuit address
    lis.wait_for(lambda e: e.get("event") == "registered" and e["_t"] > res["_t"], 30, "re-provide")

    dialer = start_dialer(rig, "pub", rid, "s1", "--count", "3", "--interval", "0.3", "--timeout", "120")
    assert dialer.wait_exit(150) == 0, dialer.events[-6:]
    found = dialer.wait_for(is_kind("discovered", peer_id=lis.peer_id), 1, "discovery of the listener")
    assert any("/p2p-circuit" in a for a in found["addrs"]), found["addrs"]
    conns = [e for e in dialer.kinds("connected") if e["peer_id"] == lis.peer_id]
    assert conns and all(e["via"] == "relay" for e in conns), conns
    replies = [e for e in dialer.kinds("reply") if e["peer_id"] == lis.peer_id and e["ok"]]
    assert len(replies) >= 3
    assert replies[0]["result"]["by"] == lis.peer_id
    inbound = lis.wait_for(is_kind("connected", peer_id=dialer.peer_id), 5, "inbound relayed connection")
    assert inbound["via"] == "relay" and "/p2p-circuit" in inbound["addr"]


def test_dcutr_upgrades_relayed_connection_between_two_nats(make_rig, tmp_path: Path) -> None:
    """(2) Both behind endpoint-independent NATs: relayed first, then a hole punch to direct."""
    rig = make_rig()
    relay = start_relay(rig, tmp_path / "relay")
    rid = relay.peer_id
    lis = start_listener(rig, "a", rid, "s2")
    lis.wait_for(is_kind("reservation"), 90, "reservation")
    lis.wait_for(lambda e: e.get("event") == "registered" and "_t" in e, 30)
    dialer = start_dialer(rig, "b", rid, "s2", "--count", "4", "--interval", "1", "--timeout", "120")
    assert dialer.wait_exit(150) == 0, dialer.events[-6:]
    first = next(e for e in dialer.kinds("connected") if e["peer_id"] == lis.peer_id)
    assert first["via"] == "relay"
    punch_b = dialer.wait_for(is_kind("hole_punch", peer_id=lis.peer_id), 1, "hole_punch on the dialer")
    punch_a = lis.wait_for(is_kind("hole_punch", peer_id=dialer.peer_id), 5, "hole_punch on the listener")
    assert punch_a["side"] == "initiator" and punch_b["side"] == "responder"
    assert punch_a["outcome"] == "SUCCESS", punch_a
    assert 1 <= punch_a["attempts"] <= 3 and punch_a["ms"] > 0
    direct = dialer.wait_for(lambda e: e.get("event") == "connected" and e.get("via") == "hole_punch", 1,
                             "a hole-punched connection")
    assert direct["addr"].startswith(f"/ip4/{NAT_WAN['a']}/tcp/4001"), direct  # A's NAT, A's listen port
    # a reply after the punch arrived (over the direct connection: new streams prefer it)
    assert any(e["_t"] > direct["_t"] for e in dialer.kinds("reply"))


def test_symmetric_nat_punch_fails_and_traffic_stays_relayed(make_rig, tmp_path: Path) -> None:
    """(2, negative) B's NAT maps symmetrically: every punch round fails, replies keep flowing."""
    rig = make_rig(symmetric=("b",))
    relay = start_relay(rig, tmp_path / "relay")
    rid = relay.peer_id
    lis = start_listener(rig, "a", rid, "s2n")
    lis.wait_for(is_kind("reservation"), 90, "reservation")
    lis.wait_for(is_kind("registered"), 30)
    dialer = start_dialer(rig, "b", rid, "s2n", "--interval", "1")  # runs until stopped
    punch = lis.wait_for(is_kind("hole_punch"), 120, "hole_punch outcome")
    assert punch["outcome"] == "FAILED" and punch["attempts"] == 3, punch
    dialer.wait_for(lambda e: e.get("event") == "reply" and e["_t"] > punch["_t"], 15, "a reply after the failure")
    dialer.stop()
    assert all(e["via"] == "relay" for e in dialer.kinds("connected") if e["peer_id"] == lis.peer_id)


def test_listener_re_reserves_after_relay_restart(make_rig, tmp_path: Path) -> None:
    """(3) The relay restarts (same identity): the listener re-reserves and is reachable again."""
    rig = make_rig()
    data = tmp_path / "relay"
    relay = start_relay(rig, data)
    rid = relay.peer_id
    lis = start_listener(rig, "a", rid, "s3", "--relay", relay_addr(rid), "--no-hole-punch")
    first = lis.wait_for(is_kind("reservation"), 90, "first reservation")
    relay.stop()
    lost = lis.wait_for(lambda e: e.get("event") == "error" and e.get("where") == "relay", 20, "lost relay")
    relay2 = start_relay(rig, data, name="relay2")
    assert relay2.peer_id == rid
    again = lis.wait_for(lambda e: e.get("event") == "reservation" and e["_t"] > lost["_t"], 90, "re-reservation")
    assert again["renewal"] is False and again["expires"] >= first["expires"]
    lis.wait_for(lambda e: e.get("event") == "registered" and e["_t"] > again["_t"], 30, "re-provide")
    dialer = start_dialer(rig, "pub", rid, "s3", "--count", "2", "--interval", "0.3", "--timeout", "120")
    assert dialer.wait_exit(150) == 0, dialer.events[-6:]
    assert next(e["via"] for e in dialer.kinds("connected") if e["peer_id"] == lis.peer_id) == "relay"


def test_relay_limits_refuse_clearly(make_rig, tmp_path: Path) -> None:
    """(4) Limits reached: the refusal names the limit, arrives within seconds, nothing hangs."""
    rig = make_rig()
    relay = start_relay(rig, tmp_path / "relay", "--relay-max-reservations", "1", "--relay-max-circuits", "1")
    rid = relay.peer_id
    lis_a = start_listener(rig, "a", rid, "s4", "--relay", relay_addr(rid), "--no-hole-punch")
    lis_a.wait_for(is_kind("reservation"), 90, "A's reservation")
    lis_b = start_listener(rig, "b", rid, "s4", "--relay", relay_addr(rid), "--no-hole-punch")
    refused = lis_b.wait_for(lambda e: e.get("event") == "error" and e.get("where") == "relay"
                             and "refused" in e["message"], 90, "B's refusal")
    assert "RESOURCE_LIMIT_EXCEEDED" in refused["message"]
    assert not lis_b.kinds("reservation")
    a_id, b_id = lis_a.peer_id, lis_b.peer_id
    circuit_a = f"{relay_addr(rid)}/p2p-circuit/p2p/{a_id}"
    circuit_b = f"{relay_addr(rid)}/p2p-circuit/p2p/{b_id}"
    holder = rig.spawn("pub", "holder", [sys.executable, PROBE, circuit_a, "--hold", "30"])
    line = json.loads(_readline(holder.popen, 90))
    assert line["ok"], line  # A is reachable through its reservation and takes the one circuit slot
    t0 = time.monotonic()
    probe = rig.spawn("pub", "probe", [sys.executable, PROBE, circuit_a, circuit_b, "--timeout", "10"])
    lines = [json.loads(_readline(probe.popen, 90)) for _ in range(2)]
    assert probe.popen.wait(timeout=60) == 1
    assert time.monotonic() - t0 < 120  # process start included; the per-dial times below are the real check
    assert not lines[0]["ok"] and "RESOURCE_LIMIT_EXCEEDED" in lines[0]["error"], lines[0]
    assert not lines[1]["ok"] and "NO_RESERVATION" in lines[1]["error"], lines[1]
    assert all(line["ms"] < 10_000 for line in lines), lines


def _readline(popen, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(popen.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise AssertionError(f"no output within {timeout}s")
    line = popen.stdout.readline().decode()
    if not line:
        raise AssertionError("process ended without output")
    return line


__all__ = ["Punch", "tail"]
