"""The pictures inside the console, fed snapshots without a node (attached to a socket
nobody serves, as test_network_tab does): what shows at 80x24 and 120x40, the DHT chart,
the monitor's map view and a transfer's rate plot."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from punch_net.api import RoutingBucket, RoutingPeer, RoutingTableInfo, Snapshot, Stats
from punch_net.config import NodeConfig
from punch_net.torrent.info import TransferInfo
from punch_tui.app import PunchApp
from punch_tui.format import rate, short_id
from punch_tui.messages import SnapshotReady
from punch_tui.screens.torrent import TransferDetailsScreen
from punch_tui.widgets.netmap import NetworkPicture
from punch_tui.widgets.plots import BucketChart, PlotGrid, RatePlot

NET = {"known": 3, "alive": 3, "rounds": 1, "last_round": {},
       "peers": [{"peer_id": f"12D3KooWcrawled{i}", "alive": True, "reachability": r, "dht_server": True}
                 for i, r in enumerate(("direct", "relayed", "unreachable"))],
       "links": [[0, 1], [1, 2]]}


def snapshots(n: int = 30) -> list[Snapshot]:
    t0 = time.time() - n
    rt = RoutingTableInfo(size=5, mode="server", last_refresh=None, buckets=[
        RoutingBucket(0, [RoutingPeer(f"a{i}", 0, t0, i == 0, "", []) for i in range(3)]),
        RoutingBucket(2, [RoutingPeer(f"b{i}", 2, t0, False, "", []) for i in range(2)])])
    out = []
    for i in range(n):
        st = Stats(role="monitor", peer_id="12D3KooWme", uptime_s=i, connections=3, routing_table_size=5,
                   events_dropped=0, bytes_in=i * 4000, bytes_out=i * 1000, messages_in=i, lookups=i // 3,
                   lookup_ms=(i // 3) * 120.0)
        tr = TransferInfo(info_hash="ab" * 32, name="f.bin", size=10, have=1, total=4, bytes_per_s=5000.0 + i,
                          eta_s=3.0, active_peers=1, state="downloading", direction="download", path="", uploaded=0,
                          upload_bytes_per_s=0.0, piece_sources=(0, -1, -1, -1))
        out.append(Snapshot(ts=t0 + i, stats=st, routing=rt, network=NET, transfers=[tr]))
    return out


def text_of(app: PunchApp) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def _scenario(tmp_path: Path, size: tuple[int, int]) -> dict[str, str]:
    app = PunchApp(NodeConfig(role="monitor"), attach=tmp_path / "none.sock")
    shown: dict[str, str] = {}
    async with app.run_test(size=size) as pilot:
        for snap in snapshots():
            app.post_message(SnapshotReady(snap))
        await pilot.pause(0.3)
        shown["overview"] = text_of(app)
        plots = app.query_one("#ov-plots", PlotGrid)
        assert plots.views["in"].peak == 4000.0 and plots.views["in"].scale == 4096.0
        shown["overview-plots"] = " ".join(plots.views)
        await pilot.press("2")
        await pilot.pause(0.3)
        shown["dht"] = text_of(app)
        assert app.query_one(BucketChart).fill == [(0, 3, 1), (1, 0, 0), (2, 2, 0)]
        await pilot.press("7")
        await pilot.pause(0.3)
        shown["network"] = text_of(app)
        net_plots = app.query_one("#net-plots", PlotGrid)
        shown["network-plots"] = " ".join(net_plots.views)
        assert net_plots.views["latency"].peak == 120.0 and net_plots.views["connections"].last == 3.0
        await pilot.press("m")
        await pilot.pause(0.3)
        shown["map"] = text_of(app)
        picture = app.query_one(NetworkPicture)
        assert [p.peer_id for p in picture.drawn] == [p["peer_id"] for p in NET["peers"]]  # type: ignore[index]
        await pilot.press("m")
        await pilot.pause(0.2)
        assert not picture.display or not app.query_one("#tab-network").has_class("map")
        transfers = app.transfers_tab
        app.push_screen(TransferDetailsScreen(transfers, "ab" * 32))
        await pilot.pause(0.3)
        shown["transfer"] = text_of(app)
        down = app.screen.query_one("#det-down", RatePlot)
        assert down.view is not None and down.view.peak == 5029.0
        await pilot.press("escape", "q")
    return shown


def test_pictures_at_80x24(tmp_path: Path) -> None:
    shown = asyncio.run(_scenario(tmp_path, (80, 24)))
    assert shown["overview-plots"] == "in out"  # beside the info table, the event log keeps its rows
    assert f"in {rate(4000)}" in shown["overview"] and f"out {rate(1000)}" in shown["overview"]
    assert "4KiB┤" in shown["overview"]
    assert "-5m" in shown["overview"] and "now" in shown["overview"]
    assert shown["network-plots"] == "connections latency requests"
    assert "peers per bucket" in shown["dht"] and "20┤" in shown["dht"]
    assert "DHT lookup" in shown["network"] and "connections" in shown["network"]
    for peer in NET["peers"]:  # type: ignore[attr-defined]
        assert short_id(peer["peer_id"], 12) in shown["map"]
    assert "3 peers · 2 links" in shown["map"]
    assert "download" in shown["transfer"] and "upload" in shown["transfer"]
    for name, text in shown.items():
        assert all(len(line) <= 80 for line in text.splitlines()), name


def test_all_six_plots_at_120x40(tmp_path: Path) -> None:
    shown = asyncio.run(_scenario(tmp_path, (120, 40)))
    six = {"in", "out", "connections", "requests", "errors", "latency"}
    assert set(shown["overview-plots"].split()) == set(shown["network-plots"].split()) == six
    for title in ("traffic in", "traffic out", "connections", "requests", "errors", "DHT lookup"):
        assert title in shown["network"], title
    for title in (f"in {rate(4000)}", f"out {rate(1000)}", "connections", "requests", "errors", "DHT lookup"):
        assert title in shown["overview"], title
