"""The console's pictures against real nodes (child processes on 127.0.0.1): the live
plots show real values in-process and attached, the DHT bar chart is the routing table's
buckets, and the monitor's picture holds the peers it crawled."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from tui_net import Child, Network, make_app, screen_text, wait_until

from punch_net.config import NodeConfig
from punch_tui.app import PunchApp
from punch_tui.format import short_id
from punch_tui.widgets.netmap import NetworkPicture
from punch_tui.widgets.plots import BucketChart, PlotGrid


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def peak(app: Any, grid: str, key: str) -> float:
    view = app.query_one(grid, PlotGrid).views.get(key)
    return view.peak if view is not None and view.scale > 0 else 0.0


async def check_plots(pilot: Any, app: Any, namespace: str) -> None:
    """Traffic and requests on the Overview; then a DHT lookup, and its time on the Network tab."""
    await wait_until(pilot, lambda: peak(app, "#ov-plots", "in") > 0 and peak(app, "#ov-plots", "out") > 0,
                     what="traffic in the Overview's plots")
    text = screen_text(app)
    assert {"in", "out"} <= set(app.query_one("#ov-plots", PlotGrid).views) and "B┤" in text and "now" in text
    await wait_until(pilot, lambda: app.history.series["latency"].points, what="a first sample")
    app.find_peers(namespace)  # a provider lookup: its time is the latency plot's next sample
    await pilot.press("7")
    await wait_until(pilot, lambda: peak(app, "#net-plots", "latency") > 0, what="the lookup's time plotted")
    await wait_until(pilot, lambda: peak(app, "#net-plots", "requests") > 0, what="requests plotted")
    assert peak(app, "#net-plots", "connections") >= 1
    assert "DHT lookup" in screen_text(app)


def test_plots_in_process(network: Network, tmp_path: Path) -> None:
    """The console's own dialer node, at 80x24: its messages are traffic and requests."""

    async def scenario() -> None:
        app = make_app(tmp_path, "dialer", [network.server.addr], interval=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await check_plots(pilot, app, network.namespace)
            await pilot.press("q")

    run(scenario())


def test_plots_attached(network: Network, tmp_path: Path) -> None:
    """`--attach` to a headless listener: the same plots from the snapshots over the socket."""
    env = {"PUNCH_DATA_DIR": str(tmp_path / "node"), "PUNCH_CONFIG": str(tmp_path / "config.toml")}
    node = Child("listener", "--bootstrap", network.server.addr, "--namespace", "tui-plots", cwd=tmp_path, env=env)
    target = network.listeners[0]
    try:
        sock = Path(str(node.wait("control")["path"]))

        async def scenario() -> None:
            app = PunchApp(NodeConfig(role="listener"), attach=sock, poll_interval=0.3)
            async with app.run_test(size=(120, 40)) as pilot:
                await wait_until(pilot, lambda: app.last_snapshot is not None, what="a snapshot over the socket")
                app.dial(target.addr)
                await wait_until(pilot, lambda: app.last_snapshot and target.peer_id in
                                 {c.peer_id for c in app.last_snapshot.connections}, what="dialled")
                for i in range(5):
                    app.request_peer(target.peer_id, "message", {"text": f"plot me {i}"})
                await check_plots(pilot, app, network.namespace)
                await pilot.press("q")

        run(scenario())
    finally:
        node.stop()


def cpl(a: str, b: str) -> int:
    """Common prefix length of two peers' Kademlia keys (sha256 of the peer id's bytes)."""
    from libp2p.peer.id import ID

    x = int.from_bytes(hashlib.sha256(ID.from_base58(a).to_bytes()).digest(), "big") ^ \
        int.from_bytes(hashlib.sha256(ID.from_base58(b).to_bytes()).digest(), "big")
    return 256 - x.bit_length()


def test_dht_bar_chart_is_the_routing_table(network: Network, tmp_path: Path) -> None:
    async def scenario() -> None:
        app = make_app(tmp_path, "listener", [network.server.addr], namespace="tui-chart")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.last_snapshot and app.last_snapshot.routing
                             and network.server.peer_id in {p.peer_id for b in app.last_snapshot.routing.buckets
                                                            for p in b.peers}, what="the server in the table")
            await pilot.press("2")
            chart = app.query_one(BucketChart)
            await wait_until(pilot, lambda: chart.fill, what="the chart drawn")
            rt = app.last_snapshot.routing
            want = {b.cpl: len(b.peers) for b in rt.buckets}
            assert {c: n for c, n, _ in chart.fill if n} == want
            assert sum(n for _, n, _ in chart.fill) == rt.size
            server_cpl = cpl(app.peers.me, network.server.peer_id)
            assert dict((c, n) for c, n, _ in chart.fill)[server_cpl] >= 1
            text = screen_text(app)
            assert "peers per bucket" in text and "20┤" in text
            await pilot.press("q")

    run(scenario())


def test_monitor_picture_shows_the_crawled_peers(network: Network, tmp_path: Path) -> None:
    everyone = {network.server.peer_id, *(lst.peer_id for lst in network.listeners)}

    async def scenario() -> None:
        app = make_app(tmp_path, "monitor", [network.server.addr], crawl_interval=2.0)
        async with app.run_test(size=(120, 40)) as pilot:
            def crawled() -> set[str]:
                net = app.last_snapshot.network if app.last_snapshot else None
                peers = net.get("peers") if net else None
                return {p["peer_id"] for p in peers if p.get("alive")} if isinstance(peers, list) else set()

            await wait_until(pilot, lambda: everyone <= crawled(), timeout=90, what="every node crawled")
            await pilot.press("7", "m")
            picture = app.query_one(NetworkPicture)
            await wait_until(pilot, lambda: everyone <= {p.peer_id for p in picture.drawn}, what="all drawn")
            net = app.last_snapshot.network
            assert net and net.get("links"), "the server's routing table holds the listeners: links to draw"
            text = screen_text(app)
            for peer in everyone:
                assert short_id(peer, 12) in text
            assert "links" in text and "direct" in text
            await pilot.press("q")

    run(scenario())
