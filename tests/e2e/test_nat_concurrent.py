"""Issue 14 point 8 on the NAT rig: five dialers reach one listener through one relay at
once, and every relayed connection keeps working while others open and end around it.

Before the fix (punch_net/p2p/patches/relay_hop.py, bug 2) the relay filed every circuit
under the destination's peer id, so the end of one dialer's circuit closed the newest
circuit to the listener, another dialer's; that dialer's next request failed. The listener
runs with --no-hole-punch so every request rides its circuit and a broken one shows.
The hole-punching variant is measured by benchmarks/nat_bench.py --parallel 5 (docs/NAT.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nat_harness import Punch, is_kind, start_dialer, start_listener, start_relay

pytestmark = pytest.mark.slow

WAVES = 4
AT_ONCE = 5
INTERVAL = 0.4


def test_five_dialers_at_once_through_one_relay_all_connections_work(make_rig, tmp_path: Path) -> None:
    rig = make_rig()
    relay = start_relay(rig, tmp_path / "relay")
    rid = relay.peer_id
    lis = start_listener(rig, "a", rid, "s8", "--no-hole-punch")
    lis.wait_for(is_kind("reservation"), 90, "reservation")
    lis.wait_for(is_kind("registered"), 30, "provider record")
    dialers: list[Punch] = []
    for wave in range(WAVES):
        # five at once, leaving one after another (4, 6, … 12 replies): the ends of this wave's
        # circuits overlap the next wave's circuits opening and carrying their first requests
        batch = [start_dialer(rig, "b", rid, "s8", "--port", str(4100 + len(dialers) + i),
                              "--count", str(4 + 2 * i), "--interval", str(INTERVAL), "--timeout", "150",
                              name=f"d{len(dialers) + i}") for i in range(AT_ONCE)]
        dialers.extend(batch)
        if wave < WAVES - 1:
            for d in batch:
                d.wait_for(lambda e: e.get("event") == "reply" and e.get("ok"), 150, "first reply")
    lid = lis.peer_id
    problems: list[str] = []
    deadline = time.monotonic() + 240
    for d in dialers:
        code = d.wait_exit(max(5.0, deadline - time.monotonic()))
        conns = [e for e in d.kinds("connected") if e["peer_id"] == lid]
        failed = [e["message"] for e in d.kinds("error") if e.get("where") == "dialer"]
        if code != 0 or failed or [e["via"] for e in conns] != ["relay"]:
            problems.append(f"{d.name}: exit {code}, connections {[e['via'] for e in conns]}, failed requests {failed}")
    assert not problems, f"{len(problems)} of {len(dialers)} relayed connections broke:\n" + "\n".join(problems)
    served = [e for e in lis.kinds("connected") if e.get("via") == "relay"]
    assert len({e["peer_id"] for e in served}) == WAVES * AT_ONCE
