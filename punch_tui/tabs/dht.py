"""DHT: the routing table the way `ipfs stats dht` shows it, and more: buckets by
common-prefix length with fill and freshness (a table, and beside it a bar chart),
each peer with last seen, agent and a connected marker, and a one-line health summary."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Static

from punch_net.api import RoutingTableInfo, Snapshot
from punch_tui.format import plural, short_id, since
from punch_tui.tabs.base import NodeTab
from punch_tui.widgets.plots import BucketChart
from punch_tui.widgets.table import Cell, FilterTable, cell

BUCKET_SIZE = 20  # Kademlia k in py-libp2p


def fill_bar(n: int, k: int = BUCKET_SIZE, width: int = 10) -> str:
    filled = min(width, round(width * n / k)) if k else 0
    return "█" * filled + "░" * (width - filled)


def health(rt: RoutingTableInfo | None, now: float) -> tuple[str, str]:
    """(summary, level) where level is ok / warn / bad."""
    if rt is None:
        return "routing table unavailable", "bad"
    peers = [p for b in rt.buckets for p in b.peers]
    if not peers:
        return f"{rt.mode} mode · empty routing table: not bootstrapped yet", "bad"
    connected = sum(1 for p in peers if p.connected)
    stale = sum(1 for p in peers if p.last_seen and now - p.last_seen > 3600)
    refresh = since(rt.last_refresh, now)
    level = "ok" if len(peers) >= 3 and stale * 2 < len(peers) else "warn"
    return (f"{rt.mode} mode · {plural(rt.size, 'peer')} in {plural(len(rt.buckets), 'bucket')} · "
            f"{connected} connected · "
            f"{stale} stale (>1h) · refreshed {refresh} ago", level)


class DhtTab(NodeTab):
    TITLE = "DHT"
    DEFAULT_CSS = """
    DhtTab #dht-health { height: 1; }
    DhtTab #dht-health.ok { color: $success; }
    DhtTab #dht-health.warn { color: $warning; }
    DhtTab #dht-health.bad { color: $error; }
    DhtTab #dht-top { height: 35%; min-height: 6; }
    DhtTab #dht-buckets { height: 1fr; width: 1fr; max-width: 48; }
    DhtTab #dht-chart { height: 1fr; width: 1fr; padding: 0 0 0 1; }
    DhtTab #dht-peers { height: 1fr; }
    DhtTab .section { color: $accent; text-style: bold; height: 1; }
    """

    BUCKET_COLUMNS = [("cpl", "CPL"), ("fill", "Fill"), ("peers", "Peers"), ("conn", "Conn"),
                      ("fresh", "Newest")]
    PEER_COLUMNS = [("peer", "Peer"), ("cpl", "CPL"), ("seen", "Last seen"), ("conn", "Conn"),
                    ("agent", "Agent"), ("addr", "Address")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._row_cache: dict[str, tuple[tuple[Any, ...], list[Cell]]] = {}

    def compose(self) -> ComposeResult:
        yield Static("waiting for the node…", id="dht-health")
        with Horizontal(id="dht-top"):
            yield FilterTable(self.BUCKET_COLUMNS, id="dht-buckets")
            yield BucketChart(BUCKET_SIZE, id="dht-chart")
        yield Label("Peers", classes="section")
        yield FilterTable(self.PEER_COLUMNS, id="dht-peers")

    def update_snapshot(self, snap: Snapshot) -> None:
        self.show(snap.routing, snap.ts)

    def show(self, rt: RoutingTableInfo | None, now: float | None = None) -> None:
        now = now or time.time()
        text, level = health(rt, now)
        h = self.query_one("#dht-health", Static)
        h.update(text)
        h.set_classes(level)
        buckets: dict[str, list[Cell]] = {}
        peers: dict[str, list[Cell]] = {}
        if rt is not None:
            for b in rt.buckets:
                newest = max((p.last_seen for p in b.peers), default=0.0)
                conn = sum(1 for p in b.peers if p.connected)
                buckets[str(b.cpl)] = [
                    cell(b.cpl, b.cpl), cell(fill_bar(len(b.peers)), len(b.peers)),
                    cell(f"{len(b.peers)}/{BUCKET_SIZE}", len(b.peers)), cell(conn, conn),
                    cell(since(newest, now), -newest),
                ]
                for p in b.peers:
                    # coarse ages (minutes) so 1,000 rows do not all change every second;
                    # unchanged peers reuse their cells and the table skips them
                    minutes = int((now - p.last_seen) // 60) if p.last_seen else -1
                    sig = (p.cpl, p.last_seen, p.connected, p.agent, p.addrs[0] if p.addrs else "", minutes)
                    cached = self._row_cache.get(p.peer_id)
                    if cached is not None and cached[0] == sig:
                        peers[p.peer_id] = cached[1]
                        continue
                    seen_text = "<1m" if 0 <= minutes < 1 else since(p.last_seen, now)
                    peers[p.peer_id] = [
                        cell(short_id(p.peer_id, 12), p.peer_id), cell(p.cpl, p.cpl),
                        cell(seen_text, -(p.last_seen or 0)),
                        cell("●" if p.connected else "·", not p.connected,
                             "bold green" if p.connected else "dim"),
                        cell(p.agent or "?"), cell(p.addrs[0] if p.addrs else "-"),
                    ]
                    self._row_cache[p.peer_id] = (sig, peers[p.peer_id])
        self._row_cache = {k: v for k, v in self._row_cache.items() if k in peers}
        self.query_one("#dht-buckets", FilterTable).set_rows(buckets)
        self.query_one("#dht-chart", BucketChart).show(rt)
        self.query_one("#dht-peers", FilterTable).set_rows(peers)

    def filter_target(self) -> FilterTable:
        return self.query_one("#dht-peers", FilterTable)
