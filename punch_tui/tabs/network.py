"""Network: live plots of this node over the last minutes (connections, lookup latency,
requests, errors, traffic: as many as fit), and for the monitor role every peer its
crawler knows — alive or not, how it is reached, its agent, capabilities, uptime,
reputation and when it was last seen. `/` filters, `s`/`S` or a header click sort; the
selected peer's details are shown below; `m` swaps the table for a picture of the
crawled network (peers and their routing-table links, coloured by reachability)."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from punch_net.api import Snapshot
from punch_tui.console import console
from punch_tui.format import age, ms, plural, short_id, size
from punch_tui.tabs.base import NodeTab
from punch_tui.widgets.netmap import NetworkPicture
from punch_tui.widgets.plots import PlotGrid
from punch_tui.widgets.table import Cell, FilterTable, cell

# The Overview leads with traffic; here the others come first (both show all at 120x40).
PLOTS = ("connections", "latency", "requests", "errors", "in", "out")

REACH_STYLE = {"direct": "green", "relayed": "yellow", "unreachable": "red", "unknown": "dim"}


def _num(caps: dict[str, Any] | None, key: str) -> float | None:
    if not caps:
        return None
    v = caps.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def peer_row(p: dict[str, Any], now: float) -> list[Cell]:
    caps = p.get("capabilities") or {}
    cores, cpu = _num(caps, "cores"), _num(caps, "cpu_percent")
    mem_total, mem_free, disk = _num(caps, "memory_total"), _num(caps, "memory_available"), _num(caps, "disk_free")
    uptime = p.get("uptime_s")
    last = p.get("last_alive") or p.get("last_seen")
    reach = str(p.get("reachability") or "unknown")
    rep = p.get("reputation")
    return [
        cell(short_id(p["peer_id"], 12), p["peer_id"]),
        cell("up" if p.get("alive") else "down", 0 if p.get("alive") else 1,
             style="green" if p.get("alive") else "red"),
        cell(reach, style=REACH_STYLE.get(reach, "")),
        cell(p.get("agent") or "?"),
        cell("-" if cores is None else f"{cores:g}", cores),
        cell("-" if cpu is None else f"{cpu:.0f}%", cpu),
        cell("-" if mem_free is None else f"{size(mem_free)}/{size(mem_total or 0)}", mem_free),
        cell("-" if disk is None else size(disk), disk),
        cell(age(uptime) if isinstance(uptime, int | float) else "-", uptime),
        cell(ms(p.get("rtt_ms")), p.get("rtt_ms") if p.get("rtt_ms") is not None else float("inf")),
        cell("-" if rep is None else f"{rep:.2f}", rep),
        cell(f"{age(now - last)} ago" if last else "never", -(last or 0)),
    ]


def peer_detail(p: dict[str, Any]) -> str:
    caps = p.get("capabilities") or {}
    protos = ", ".join(p.get("protocols") or []) or "?"
    addrs = "  ".join((p.get("addrs") or [])[:4]) or "?"
    os_name = caps.get("os", "?")
    load = caps.get("load") or []
    load_s = " ".join(f"{x:.2f}" for x in load[:3]) if load else "?"
    table = p.get("routing_table")
    return (f"[b]{p['peer_id']}[/b]  {p.get('agent') or '?'}  {os_name}  punch {caps.get('punch_version', '?')}  "
            f"load {load_s}\n"
            f"addrs {addrs}\n"
            f"protocols {protos}\n"
            f"routing table ≈{table if table is not None else '?'} peers · crawled {p.get('crawls', 0)}× · "
            f"{('error: ' + p['error']) if p.get('error') else 'no errors'}")


class NetworkTab(NodeTab):
    TITLE = "Network"
    BINDINGS = [Binding("m", "toggle_map", "Map/table")]
    DEFAULT_CSS = """
    NetworkTab #net-summary { height: 1; color: $foreground-muted; }
    NetworkTab #net-plots { height: 30%; min-height: 5; }
    NetworkTab #net-table { height: 1fr; }
    NetworkTab #net-map { height: 1fr; display: none; }
    NetworkTab #net-detail { height: auto; max-height: 6; border-top: solid $primary; padding: 0 1; }
    NetworkTab.map #net-map { display: block; }
    NetworkTab.map #net-table, NetworkTab.map #net-detail { display: none; }
    NetworkTab.not-monitor #net-plots { height: 1fr; }
    NetworkTab.not-monitor #net-table, NetworkTab.not-monitor #net-detail,
    NetworkTab.not-monitor #net-map { display: none; }
    """
    COLUMNS = [("peer", "Peer"), ("state", "State"), ("reach", "Reach"), ("agent", "Agent"), ("cores", "Cores"),
               ("cpu", "CPU"), ("mem", "Mem free"), ("disk", "Disk free"), ("uptime", "Uptime"), ("rtt", "RTT"),
               ("rep", "Rep"), ("seen", "Last seen")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.peers: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first crawl…", id="net-summary")
        yield PlotGrid(console(self.app).history, PLOTS, id="net-plots")
        yield FilterTable(self.COLUMNS, id="net-table")
        yield NetworkPicture(id="net-map")
        yield Static("select a peer (↑/↓) for its addresses, protocols and capabilities", id="net-detail")

    def update_snapshot(self, snap: Snapshot) -> None:
        net = snap.network
        self.query_one("#net-plots", PlotGrid).refresh()
        if self.has_class("not-monitor") != (net is None):
            self.set_class(net is None, "not-monitor")
            self.refresh_bindings()
        if net is None:
            self.query_one("#net-summary", Static).update(
                "this node's last minutes · not a monitor: `punch monitor` maps the network")
            return
        if self.has_class("map"):
            self.query_one("#net-map", NetworkPicture).show(net)
        now = time.time()
        # The crawler's map is JSON (punch_net/dht/crawler.py): checked here, row by row.
        peers = net.get("peers")
        self.peers = {str(p["peer_id"]): p for p in (peers if isinstance(peers, list) else [])
                      if isinstance(p, dict) and "peer_id" in p}
        self.query_one("#net-table", FilterTable).set_rows({k: peer_row(p, now) for k, p in self.peers.items()})
        last = net.get("last_round")
        last = last if isinstance(last, dict) else {}
        took = f" in {last['duration_ms'] / 1000:.1f}s" if last.get("duration_ms") is not None else ""
        when = f", {age(now - last['finished'])} ago" if last.get("finished") else ""
        direct = sum(1 for p in self.peers.values() if p.get("reachability") == "direct")
        known = net.get("known", 0)
        self.query_one("#net-summary", Static).update(
            f"{plural(known if isinstance(known, int) else 0, 'peer')} known · "
            f"{net.get('alive', 0)} alive · {direct} direct · "
            f"crawl #{net.get('rounds', 0)}{took}{when}")
        self._show_detail()

    def _show_detail(self) -> None:
        key = self.query_one("#net-table", FilterTable).selected_key
        if key and key in self.peers:
            self.query_one("#net-detail", Static).update(peer_detail(self.peers[key]))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No map key where there is no crawl to draw."""
        return not (action == "toggle_map" and self.has_class("not-monitor"))

    def action_toggle_map(self) -> None:
        self.toggle_class("map")
        picture = self.query_one("#net-map", NetworkPicture)
        if self.has_class("map"):
            snap = console(self.app).last_snapshot
            picture.show(snap.network if snap is not None else None)
            picture.focus()  # the hidden table cannot keep it, and `m` must reach this tab
        else:
            self.query_one("#net-table", FilterTable).focus()

    def filter_target(self) -> FilterTable:
        return self.query_one("#net-table", FilterTable)
