"""The console's pictures without a terminal or a socket: series buffers, rates from
counters, scales, chart text, the plot grid's shape, the DHT bucket chart, the network
picture's layout, and the monitor map's links."""

from __future__ import annotations

from punch_net.api import RoutingBucket, RoutingPeer, RoutingTableInfo, Snapshot, Stats
from punch_net.dht.crawler import NetworkMap
from punch_net.torrent.info import TransferInfo
from punch_tui.format import short_id
from punch_tui.widgets.netmap import (
    LABELS,
    BrailleCanvas,
    capacity,
    choose,
    draw_map,
    map_peers,
    network_picture,
    ring_layout,
)
from punch_tui.widgets.plots import (
    PLOTS,
    CounterRate,
    NodeHistory,
    Series,
    axis_label,
    bar_rows,
    bucket_chart,
    bucket_fill,
    columns,
    grid_shape,
    nice_scale,
    plot_lines,
    x_labels,
)


def stats(peer: str = "me", **kw: float) -> Stats:
    base: dict[str, object] = {"role": "listener", "peer_id": peer, "uptime_s": 1.0, "connections": 0,
                               "routing_table_size": 0, "events_dropped": 0}
    return Stats(**{**base, **kw})  # type: ignore[arg-type]


def test_series_keeps_the_window_and_knows_last_and_peak() -> None:
    s = Series(window=10)
    for t in range(30):
        s.add(float(t), float(t % 7))
    assert s.points[0][0] == 19.0 and len(s.points) == 11
    s.add(30.0, None)
    assert s.last == 1.0  # (29 % 7); a gap is not a value
    assert s.peak == 6.0


def test_counter_rate_first_reading_and_reset_give_no_sample() -> None:
    r = CounterRate()
    assert r.update(10.0, 100) is None
    assert r.update(12.0, 300) == 100.0
    assert r.update(12.0, 400) is None  # no time passed
    assert r.update(13.0, 50) is None  # the counter went down: the node restarted
    assert r.update(14.0, 150) == 100.0


def test_node_history_rates_latency_and_reset() -> None:
    h = NodeHistory()
    h.add(Snapshot(ts=100.0))  # no stats: no sample at all
    assert h.now == 0.0
    h.add(Snapshot(ts=100.0, stats=stats(bytes_in=1000, bytes_out=10, connections=2, lookups=1, lookup_ms=50.0)))
    h.add(Snapshot(ts=102.0, stats=stats(bytes_in=5000, bytes_out=30, connections=3, messages_in=4,
                                         messages_out=6, errors=1, dial_errors=1, lookups=3, lookup_ms=350.0)))
    s = h.series
    assert s["in"].last == 2000.0 and s["out"].last == 10.0
    assert s["connections"].last == 3.0
    assert s["requests"].last == 5.0 and s["errors"].last == 1.0
    assert s["latency"].last == 150.0  # two lookups took 300 ms between the snapshots
    h.add(Snapshot(ts=103.0, stats=stats(bytes_in=5000, bytes_out=30, lookups=3, lookup_ms=350.0)))
    assert s["latency"].points[-1] == (103.0, None)  # no lookup finished: a gap, not a zero
    assert s["in"].last == 0.0
    h.add(Snapshot(ts=104.0, stats=stats(peer="other", bytes_in=9)))
    assert [len(x.points) for x in s.values()] == [1] * len(PLOTS)  # another node: history starts afresh
    assert s["in"].last is None


def test_node_history_keeps_each_transfer_rate_while_listed() -> None:
    def info(h: str, down: float, up: float) -> TransferInfo:
        return TransferInfo(info_hash=h, name="f", size=1, have=0, total=1, bytes_per_s=down, eta_s=None,
                            active_peers=1, state="downloading", direction="download", path="", uploaded=0,
                            upload_bytes_per_s=up, piece_sources=(-1,))

    h = NodeHistory()
    h.add(Snapshot(ts=1.0, stats=stats(), transfers=[info("a", 100.0, 0.0), info("b", 5.0, 7.0)]))
    h.add(Snapshot(ts=2.0, stats=stats(), transfers=[info("a", 300.0, 1.0)]))
    down, up = h.transfer("a")
    assert [v for _, v in down.points] == [100.0, 300.0] and up.last == 1.0
    assert h.transfer("b")[1].last == 7.0  # missing from one snapshot: kept
    h.add(Snapshot(ts=400.0, stats=stats(), transfers=[info("a", 1.0, 1.0)]))
    assert "b" not in h.transfers and not h.transfer("b")[0].points  # unlisted for a whole window: dropped


def test_nice_scale_and_labels() -> None:
    assert nice_scale(0) == 1.0
    assert nice_scale(3000, "bytes") == 4096 and axis_label(4096, "bytes") == "4KiB"
    assert nice_scale(1000, "bytes") == 1024 and axis_label(512, "bytes") == "512B"
    assert nice_scale(3.2) == 5 and nice_scale(11) == 20 and nice_scale(1000) == 1000
    assert nice_scale(0.3, "per_s") == 0.5 and nice_scale(0.3, "count") == 1
    assert axis_label(2500, "per_s") == "2.5k" and axis_label(200, "ms") == "200ms"
    assert axis_label(3 * 1024 ** 2, "bytes") == "3MiB"


def test_columns_bin_by_age_and_keep_the_spike() -> None:
    pts = [(90.0, 70.0), (91.0, 9.0), (99.5, 3.0), (100.0, None), (0.0, 50.0)]
    cols = columns(pts, now=100.0, window=10.0, width=5)  # 2 s per column, newest right; 90 is out
    assert cols == [9.0, None, None, None, 3.0]
    cols = columns([(90.5, 1.0), (91.0, 9.0)], now=100.0, window=10.0, width=5)
    assert cols[0] == 9.0


def test_bar_rows_in_eighths_with_a_floor() -> None:
    rows = bar_rows([0.0, 1.0, 0.5, None, 0.001], scale=1.0, height=2)
    assert rows == [" █   ", " ██ ▁"]  # top row, bottom row
    assert bar_rows([0.75], 1.0, 2) == ["▄", "█"]


def test_plot_lines_have_scale_zero_and_time_axis() -> None:
    s = Series()
    for t in range(60):
        s.add(1000.0 + t, 1500.0)
    lines, view = plot_lines(PLOTS["in"], s, 1059.0, 30, 6)
    texts = [line.plain for line in lines]
    assert len(lines) == 6 and all(line.cell_len <= 30 for line in lines)
    assert texts[0].startswith("traffic in 1.5")
    assert texts[1].startswith("2KiB┤") and texts[4].startswith("   0┤")
    assert texts[5].endswith("now") and "-5m" in texts[5]
    assert view.peak == 1500.0 and view.scale == 2048.0
    assert "█" in texts[4] and texts[1].strip("2KiB┤ ") == ""  # 1500/2048 of four rows: the top row is empty
    lines, _ = plot_lines(PLOTS["errors"], Series(), 0.0, 20, 3)  # no axis row when short; nothing yet
    assert len(lines) == 3 and lines[0].plain.startswith("errors -") and lines[1].plain.startswith("1┤")


def test_grid_shape_fits_80x24_and_120x40() -> None:
    assert grid_shape(6, 80, 6) == (3, 1)  # Overview at 80x24: three plots
    assert grid_shape(6, 120, 16) == (3, 2)  # all six at 120x40
    assert grid_shape(6, 80, 18) == (3, 2)
    assert grid_shape(6, 20, 4) == (1, 1)  # too small: still one
    assert grid_shape(0, 80, 24) == (0, 0)


def rt(buckets: dict[int, tuple[int, int]]) -> RoutingTableInfo:
    out = []
    for cpl, (n, conn) in buckets.items():
        out.append(RoutingBucket(cpl, [RoutingPeer(f"p{cpl}-{i}", cpl, 0.0, i < conn, "", []) for i in range(n)]))
    return RoutingTableInfo(size=sum(n for n, _ in buckets.values()), buckets=out, mode="server", last_refresh=None)


def test_bucket_fill_and_chart() -> None:
    fill = bucket_fill(rt({0: (4, 1), 1: (20, 0), 3: (10, 10)}))
    assert fill == [(0, 4, 1), (1, 20, 0), (2, 0, 0), (3, 10, 10)]
    assert bucket_fill(None) == [] and bucket_fill(rt({})) == []
    lines = [line.plain for line in bucket_chart(fill, 20, 40, 7)]
    assert len(lines) == 7 and lines[1].startswith("20┤") and lines[5].startswith(" 0┤")
    bars = [line[3:] for line in lines[1:6]]  # five chart rows, bars 4 cells apart
    column = ["".join(row[i * 4] for row in bars) for i in range(4)]
    assert column == ["    █", "█████", "     ", "  ▄██"]  # 4, 20, 0 and 10 of 20
    assert lines[6].split("└")[1].split() == ["0", "1", "2", "3"]
    assert x_labels([8, 9, 10, 11], 2) == "8 9 10  "  # 11 would touch 10
    assert bucket_chart([], 20, 40, 7)[0].plain == "nothing to chart yet"


def net(n: int, links: list[list[int]], alive: int | None = None) -> dict[str, object]:
    reach = ["direct", "relayed", "unreachable", "unknown"]
    peers = [{"peer_id": f"12D3KooWpeer{i:03d}", "reachability": reach[i % 4], "alive": i < (n if alive is None else
                                                                                               alive),
              "dht_server": i % 2 == 0} for i in range(n)]
    return {"peers": [*peers, {"bad": 1}, "junk"], "links": [*links, [0, 99], "x", [1, 1]]}


def test_map_peers_checks_the_json_and_counts_links() -> None:
    peers, links = map_peers(net(3, [[0, 1], [0, 2]]))
    assert [p.peer_id for p in peers] == ["12D3KooWpeer000", "12D3KooWpeer001", "12D3KooWpeer002"]
    assert links == [(0, 1), (0, 2)] and [p.degree for p in peers] == [2, 1, 1]


def test_choose_prefers_alive_and_connected_and_groups_by_reachability() -> None:
    peers, links = map_peers(net(10, [[5, 6], [5, 7], [1, 2]], alive=8))
    chosen, kept = choose(peers, links, 4)
    # alive first (8 and 9 are not), then the most links, then by id
    assert [p.peer_id[-3:] for p in chosen] == ["001", "005", "002", "006"]  # ring order: reachability, id
    assert [p.reach for p in chosen] == ["relayed", "relayed", "unreachable", "unreachable"]
    assert [p.label for p in chosen] == list(LABELS[:4])
    assert sorted((chosen[a].peer_id[-3:], chosen[b].peer_id[-3:]) for a, b in kept) == [("001", "002"),
                                                                                        ("005", "006")]


def test_ring_layout_and_capacity() -> None:
    pos = ring_layout(12, 40, 12)
    assert len(set(pos)) == 12 and all(0 <= x < 40 and 0 <= y < 12 for x, y in pos)
    assert pos[0] == (20, 0) or pos[0] == (19, 0)  # the first at the top
    assert ring_layout(1, 10, 5) == [(4, 2)] or ring_layout(1, 10, 5) == [(5, 2)]
    assert capacity(50, 20) >= 30 and capacity(2, 2) == 0 and capacity(400, 200) == len(LABELS)


def test_braille_line_and_drawn_map() -> None:
    c = BrailleCanvas(2, 1)
    c.line(0, 0, 3, 3)
    assert c.char(0, 0) == chr(0x2800 | 0x01 | 0x10) and c.char(1, 0) == chr(0x2800 | 0x04 | 0x80)
    peers, links = map_peers(net(6, [[0, 3], [1, 4]]))
    chosen, kept = choose(peers, links, 6)
    lines = draw_map(chosen, kept, 30, 10)
    text = "\n".join(line.plain for line in lines)
    assert all(p.label in text for p in chosen) and any(0x2800 < ord(ch) <= 0x28FF for ch in text)


def test_network_picture_lists_the_peers_it_draws() -> None:
    lines, drawn = network_picture(net(5, [[0, 1]]), 80, 14)
    text = "\n".join(line.plain for line in lines)
    assert len(drawn) == 5 and "5 peers · 1 links" in text
    for p in drawn:
        assert f"{p.label} {short_id(p.peer_id, 12)}" in text
    assert all(line.cell_len <= 80 for line in lines)
    lines, drawn = network_picture(net(60, []), 80, 10)  # more peers than legend lines
    assert "more (table: m)" in "\n".join(line.plain for line in lines)
    assert network_picture(None, 80, 10)[0][0].plain.startswith("not a monitor")
    assert network_picture({"peers": []}, 80, 10)[0][0].plain == "no peers crawled yet"


def test_network_map_snapshot_links_are_index_pairs() -> None:
    m = NetworkMap("me")
    for p in ("c", "a", "b", "d"):
        m.seen(p)
    m.peers["a"].neighbours = ["b", "c", "me", "zz"]
    m.peers["c"].neighbours = ["a"]
    snap = m.snapshot()
    order = [p["peer_id"] for p in snap["peers"]]
    assert order == ["a", "b", "c", "d"]
    assert snap["links"] == [[0, 1], [0, 2]]  # a-b, a-c once; unknown peers and ourselves left out
