"""Connections: one row per connection (peer, direction, remote address, direct or
relayed, security, muxer, streams, RTT, age); the selected row's streams and
protocols below; ping and disconnect from the keyboard."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from punch_net.api import ConnectionInfo, Snapshot
from punch_tui.console import console
from punch_tui.format import age, ms, plural, short_id, short_proto
from punch_tui.tabs.base import NodeTab
from punch_tui.widgets.table import Cell, FilterTable, cell


def conn_key(c: ConnectionInfo) -> str:
    return f"{c.peer_id}|{c.remote_addr}"


VIA_STYLE = {"relayed": "yellow", "hole-punched": "green"}


def via_label(c: ConnectionInfo) -> str:
    """direct / relayed / hole-punched (ConnectionInfo.via comes from the NAT traversal work)."""
    via = getattr(c, "via", "direct")
    return "hole-punched" if via == "hole_punch" else "relayed" if via == "relay" or c.transport == "relayed" \
        else "direct"


def conn_row(c: ConnectionInfo, now: float) -> list[Cell]:
    protos = sorted({short_proto(s.protocol) for s in c.streams})
    return [
        cell(short_id(c.peer_id, 12), c.peer_id),
        cell("in" if c.direction == "inbound" else "out" if c.direction == "outbound" else "?"),
        cell(c.remote_addr),
        cell(via_label(c), style=VIA_STYLE.get(via_label(c), "")),
        cell(short_proto(c.security) or "-"),
        cell(short_proto(c.muxer) or "-"),
        cell(f"{len(c.streams)} {','.join(protos)}".strip(), len(c.streams)),
        cell(ms(c.rtt_ms), c.rtt_ms if c.rtt_ms is not None else float("inf")),
        cell(age(now - c.since) if c.since else "-", -int(c.since // 10) if c.since else 0),
    ]


def conn_detail(c: ConnectionInfo, now: float) -> str:
    streams = ", ".join(f"{s.protocol} ({s.direction})" for s in c.streams) or "none open"
    return (f"[b]{c.peer_id}[/b]  {c.direction} via {via_label(c)}  age {age(now - c.since)}\n"
            f"addr {c.remote_addr}  security {c.security or '-'}  muxer {c.muxer or '-'}  "
            f"rtt {ms(c.rtt_ms)}  agent {c.agent or '?'}\n"
            f"streams: {streams}")


class ConnectionsTab(NodeTab):
    TITLE = "Connections"
    BINDINGS = [
        Binding("p", "ping", "Ping"),
        Binding("d", "disconnect", "Disconnect"),
    ]
    DEFAULT_CSS = """
    ConnectionsTab #conn-summary { height: 1; color: $foreground-muted; }
    ConnectionsTab #conn-table { height: 1fr; }
    ConnectionsTab #conn-detail { height: auto; max-height: 5; border-top: solid $primary; padding: 0 1; }
    """
    COLUMNS = [("peer", "Peer"), ("dir", "Dir"), ("addr", "Remote address"), ("via", "Via"),
               ("sec", "Sec"), ("mux", "Mux"), ("streams", "Streams"), ("rtt", "RTT"),
               ("age", "Age")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.conns: dict[str, ConnectionInfo] = {}
        self.now = time.time()

    def compose(self) -> ComposeResult:
        yield Static("no connections yet", id="conn-summary")
        yield FilterTable(self.COLUMNS, id="conn-table")
        yield Static("select a connection (↑/↓) — p ping · d disconnect", id="conn-detail")

    def update_snapshot(self, snap: Snapshot) -> None:
        self.now = snap.ts
        self.conns = {conn_key(c): c for c in snap.connections}
        table = self.query_one("#conn-table", FilterTable)
        table.set_rows({k: conn_row(c, snap.ts) for k, c in self.conns.items()})
        inbound = sum(1 for c in snap.connections if c.direction == "inbound")
        relayed = sum(1 for c in snap.connections if via_label(c) == "relayed")
        punched = sum(1 for c in snap.connections if via_label(c) == "hole-punched")
        peers = len({c.peer_id for c in snap.connections})
        self.query_one("#conn-summary", Static).update(
            f"{plural(len(snap.connections), 'connection')} to {plural(peers, 'peer')} · {inbound} inbound · "
            f"{len(snap.connections) - inbound} outbound · {relayed} relayed"
            + (f" · {punched} hole-punched" if punched else ""))
        self._show_detail()

    def _show_detail(self) -> None:
        c = self.selected()
        if c is not None:
            self.query_one("#conn-detail", Static).update(conn_detail(c, self.now))

    def selected(self) -> ConnectionInfo | None:
        key = self.query_one("#conn-table", FilterTable).selected_key
        return self.conns.get(key) if key else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def filter_target(self) -> FilterTable:
        return self.query_one("#conn-table", FilterTable)

    def action_ping(self) -> None:
        c = self.selected()
        if c is None:
            self.app.notify("no connection selected", severity="warning")
            return
        console(self.app).ping_peer(c.peer_id)

    def action_disconnect(self) -> None:
        c = self.selected()
        if c is None:
            self.app.notify("no connection selected", severity="warning")
            return
        console(self.app).disconnect_peer(c.peer_id)
