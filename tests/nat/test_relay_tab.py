"""The TUI Relay tab's pure parts: summary lines and table rows from a RelayStatus dict."""

from __future__ import annotations

import time

from punch_tui.tabs.relay import rows, summary

NOW = time.time()
DATA = {
    "reachability": "private", "reachability_checked": NOW - 12, "observed_addrs": ["/ip4/198.18.0.11/tcp/4001"],
    "circuit_addrs": ["/ip4/198.18.0.10/tcp/4001/p2p/R/p2p-circuit/p2p/A",
                      "/ip4/9.9.9.9/tcp/1/p2p/R/p2p-circuit/p2p/A"],
    "reservations": [{"relay": "12D3KooWFqq1LUdZdocxpG6DBkoyZanRCNAGxf5k2eqPCsmxy44z", "relay_addr": "/ip4/x",
                      "state": "active", "expires": NOW + 125, "renewals": 2, "limit_duration": 300,
                      "limit_data": 1_000_000, "circuit_addrs": [], "error": "", "since": NOW - 100}],
    "service_enabled": True, "service_limits": {"max_reservations": 128, "max_circuits": 64},
    "served_reservations": [{"peer_id": "P1xxxxxxxxxxxx", "ip": "198.18.0.11", "age_s": 30, "expires_in_s": 3500,
                             "renewals": 0}],
    "served_circuits": [{"src": "AAAAAAAAAAAAA1", "dst": "BBBBBBBBBBBB2", "age_s": 4.2, "bytes": 2000,
                         "bytes_left": 998_000, "seconds_left": 295.8, "state": "open"}],
    "service_counters": {"reservations_refused": 1, "circuits_refused": 0},
    "hole_punches": [{"peer_id": "PPPPPPPPPPPPPP", "side": "initiator", "started": NOW - 5, "outcome": "FAILED",
                      "attempts": 3, "ms": 20123.0, "error": "no direct connection", "remote_addrs": [],
                      "direct_addr": "", "rtt_ms": 3.1}],
    "outcome_counts": {"SUCCESS": 0, "FAILED": 1}, "connections_via": {"direct": 1, "relay": 1, "hole_punch": 0},
}


def test_summary_names_reachability_service_load_and_outcomes() -> None:
    lines = dict(summary(DATA, NOW))
    assert "private" in lines["Reachability"] and "12s ago" in lines["Reachability"]
    assert lines["Via relays"].endswith("(+1)")
    assert "1/128 reservations" in lines["Relay service"] and "1/64 circuits" in lines["Relay service"]
    assert "FAILED 1" in lines["Hole punches"] and "SUCCESS" not in lines["Hole punches"]
    assert lines["Connections"] == "direct 1 · relay 1 · hole punch 0"


def test_rows_show_countdown_limits_bytes_and_outcomes() -> None:
    table = {k.split(":")[0]: [c.text for c in v] for k, v in rows(DATA, NOW).items()}
    assert table["held"][2:4] == ["active", "2:05"] and table["held"][5] == "300s / 1.0 MB"
    assert table["serve"][3] == "58:20"
    assert table["circ"][4] == "2.0 KB" and table["circ"][5] == "998.0 KB / 295s"
    assert table["punch"][2] == "FAILED" and "3 att" in table["punch"][6]
    assert "no direct connection" in table["punch"][6]
    expired = dict(DATA, reservations=[dict(DATA["reservations"][0], expires=NOW - 1)])
    assert next(iter(rows(expired, NOW).values()))[3].text == "expired"
