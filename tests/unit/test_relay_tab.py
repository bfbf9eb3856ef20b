"""The TUI Relay tab's pure parts: summary lines and table rows from a RelayStatus."""

from __future__ import annotations

import time
from dataclasses import replace

from punch_net.relay.outcomes import HolePunchRecord, Outcome
from punch_net.relay.status import HeldReservation, RelayStatus, ServedCircuitInfo, ServedReservationInfo
from punch_tui.tabs.relay import rows, summary

NOW = time.time()
HELD = HeldReservation(relay="12D3KooWFqq1LUdZdocxpG6DBkoyZanRCNAGxf5k2eqPCsmxy44z", relay_addr="/ip4/x",
                       state="active", expires=NOW + 125, renewals=2, limit_duration=300, limit_data=1_000_000,
                       since=NOW - 100)
DATA = RelayStatus(
    reachability="private", reachability_checked=NOW - 12, observed_addrs=["/ip4/198.18.0.11/tcp/4001"],
    circuit_addrs=["/ip4/198.18.0.10/tcp/4001/p2p/R/p2p-circuit/p2p/A",
                   "/ip4/9.9.9.9/tcp/1/p2p/R/p2p-circuit/p2p/A"],
    reservations=[HELD],
    service_enabled=True, service_limits={"max_reservations": 128, "max_circuits": 64},
    served_reservations=[ServedReservationInfo(peer_id="P1xxxxxxxxxxxx", ip="198.18.0.11", age_s=30,
                                               expires_in_s=3500, renewals=0)],
    served_circuits=[ServedCircuitInfo(src="AAAAAAAAAAAAA1", dst="BBBBBBBBBBBB2", age_s=4.2, bytes=2000,
                                       bytes_left=998_000, seconds_left=295.8, state="open")],
    service_counters={"reservations_refused": 1, "circuits_refused": 0},
    hole_punches=[HolePunchRecord(peer_id="PPPPPPPPPPPPPP", side="initiator", started=NOW - 5,
                                  outcome=Outcome.FAILED, attempts=3, ms=20123.0, error="no direct connection",
                                  rtt_ms=3.1)],
    outcome_counts={"SUCCESS": 0, "FAILED": 1}, connections_via={"direct": 1, "relay": 1, "hole_punch": 0},
)


def test_summary_names_reachability_service_load_and_outcomes() -> None:
    lines = dict(summary(DATA, NOW))
    assert "private" in lines["Reachability"] and "12s ago" in lines["Reachability"]
    assert lines["Via relays"].endswith("(+1)")
    assert "1/128 reservations" in lines["Relay service"] and "1/64 circuits" in lines["Relay service"]
    assert "FAILED 1" in lines["Hole punches"] and "SUCCESS" not in lines["Hole punches"]
    assert lines["Connections"] == "direct 1 · relay 1 · hole punch 0"


def test_rows_show_countdown_limits_bytes_and_outcomes() -> None:
    table = {k.split(":")[0]: [c.text for c in v] for k, v in rows(DATA, NOW).items()}
    assert table["held"][2:4] == ["active", "2:05"] and table["held"][5] == "300s / 977 KiB"
    assert table["serve"][3] == "58:20"
    assert table["circ"][4] == "2.0 KiB" and table["circ"][5] == "975 KiB / 295s"
    assert table["punch"][2] == "FAILED" and "3 att" in table["punch"][6]
    assert "no direct connection" in table["punch"][6]
    expired = replace(DATA, reservations=[replace(HELD, expires=NOW - 1)])
    assert next(iter(rows(expired, NOW).values()))[3].text == "expired"


def test_a_running_punch_and_an_outcome_sent_as_text() -> None:
    """Attached, an outcome may arrive as its plain string; a punch in progress has none."""
    running = replace(DATA.hole_punches[0], outcome=None)
    as_text = replace(DATA.hole_punches[0], outcome="SUCCESS")  # type: ignore[arg-type]
    table = rows(replace(DATA, hole_punches=[running, as_text]), NOW)
    outcomes = [v[2].text for k, v in table.items() if k.startswith("punch:")]
    assert outcomes == ["running", "SUCCESS"]


def test_reachable_as_line_says_how_and_since_when() -> None:
    from punch_net.reach.summary import Since, reachable_as
    from punch_tui.tabs.relay import reachable_text

    assert reachable_as(announced=True, mapped=True, observed=True, autonat="public", circuits=True) == "announced"
    assert reachable_as(announced=False, mapped=True, observed=False, autonat="private", circuits=True) == "port-mapped"
    assert reachable_as(announced=False, mapped=False, observed=True, autonat="unknown", circuits=False) == "public"
    assert reachable_as(announced=False, mapped=False, observed=False, autonat="public", circuits=False) == "public"
    assert reachable_as(announced=False, mapped=False, observed=False, autonat="private", circuits=True) \
        == "relayed only"
    assert reachable_as(announced=False, mapped=False, observed=False, autonat="private", circuits=False) \
        == "unknown"
    since = Since()
    assert since.update("unknown", 10.0) == 10.0 and since.update("unknown", 20.0) == 10.0
    assert since.update("public", 30.0) == 30.0
    mapped = replace(DATA, reachable_as="port-mapped", reachable_since=NOW - 180,
                     mapped_addrs=["/ip4/11.22.33.1/tcp/4001"])
    assert reachable_text(mapped, NOW) == "port-mapped for 3m00s"
    line = dict(summary(mapped, NOW))["Reachable as"]
    assert "port-mapped for 3m00s" in line and "/ip4/11.22.33.1/tcp/4001" in line
    assert dict(summary(DATA, NOW))["Reachable as"].endswith("unknown[/]")
