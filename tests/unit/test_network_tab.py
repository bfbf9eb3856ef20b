"""The Network tab (monitor) renders the crawler's map: rows, filter, sort — no network."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from punch_net.api import Snapshot, Stats
from punch_net.config import NodeConfig
from punch_tui.app import PunchApp
from punch_tui.messages import SnapshotReady
from punch_tui.tabs.network import NetworkTab
from punch_tui.widgets.table import FilterTable


def peer(pid: str, alive: bool, reach: str, cpu: float) -> dict[str, object]:
    now = time.time()
    return {"peer_id": pid, "alive": alive, "reachability": reach, "agent": "py-libp2p/0.8.1",
            "capabilities": {"cores": 4, "cpu_percent": cpu, "memory_total": 8 << 30, "memory_available": 4 << 30,
                             "disk_free": 50 << 30, "os": "Linux", "punch_version": "0.1.0", "load": [0.5]},
            "uptime_s": 3600.0, "rtt_ms": 1.5, "reputation": 0.8, "last_alive": now - 5, "last_seen": now - 5,
            "addrs": ["/ip4/127.0.0.1/tcp/4001"], "protocols": ["/ipfs/kad/1.0.0"], "routing_table": 3,
            "crawls": 2, "error": ""}


def test_network_tab_lists_filters_and_sorts(tmp_path: Path) -> None:
    asyncio.run(_network_tab(tmp_path))


async def _network_tab(tmp_path: Path) -> None:
    # Attached to a socket nobody serves: the bridge keeps retrying, the tab shows what it is given.
    app = PunchApp(NodeConfig(role="monitor"), attach=tmp_path / "none.sock")
    net = {"known": 3, "alive": 2, "rounds": 4, "last_round": {"duration_ms": 1200.0, "finished": time.time()},
           "peers": [peer("12D3KooWAAAAbusyone", True, "direct", 90.0), peer("12D3KooWBBBBidle", True, "relayed", 5.0),
                     peer("12D3KooWCCCCgone", False, "unreachable", 50.0)]}
    stats = Stats(role="monitor", peer_id="me", uptime_s=1.0, connections=0, routing_table_size=0, events_dropped=0)
    snap = Snapshot(ts=time.time(), stats=stats, network=net)
    async with app.run_test(size=(140, 40)) as pilot:
        app.post_message(SnapshotReady(snap))
        await pilot.press("7")
        await pilot.pause(0.5)
        tab = app.query_one(NetworkTab)
        table = tab.query_one(FilterTable)
        assert table.row_count == 3
        summary = str(tab.query_one("#net-summary").render())
        assert "3 peers known" in summary and "2 alive" in summary and "crawl #4" in summary
        table.set_filter("relayed")
        assert table.row_count == 1
        table.set_filter("")
        table.sort_by("cpu")
        assert table.column_texts("cpu") == ["5%", "50%", "90%"]
        table.sort_by("state")
        assert table.column_texts("state")[-1] == "down"
        await pilot.press("q")
