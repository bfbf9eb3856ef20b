"""Overview: who am I, how am I doing (role, peer id, addresses, uptime, peers, DHT
size, messages, bandwidth, reachability), live plots of the last minutes (traffic,
connections, requests, errors, lookups: as many as fit) and the recent node events."""

from __future__ import annotations

import time

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from punch_net import events as ev
from punch_net.api import Snapshot, Stats
from punch_net.cli.render import bootstrap_retry, human
from punch_tui.console import console
from punch_tui.format import age, middle, plural, short_id, size
from punch_tui.tabs.base import NodeTab
from punch_tui.tabs.relay import reachable_text
from punch_tui.widgets.logview import LogEntry, LogView
from punch_tui.widgets.plots import PlotGrid

# In this order, as many as fit (the Network tab leads with the others).
PLOTS = ("in", "out", "connections", "requests", "errors", "latency")
INFO_LABEL_WIDTH = 13  # "Reachability"
INFO_WIDTH_GUESS = 40  # the info panel at 80 columns, before its first layout
INFO_VALUE_MIN = 12


def event_entry(e: ev.Event) -> LogEntry | None:
    """A one-line, human summary of a node event for the Overview event log."""
    p = short_id
    if isinstance(e, ev.Listening):
        return LogEntry("info", f"listening as {p(e.peer_id)} on {len(e.addrs)} address(es)", e, e.ts)
    if isinstance(e, ev.BootstrapRetry):
        line = bootstrap_retry(e)  # the CLI's sentence; not every try (one each 2 s while down)
        return LogEntry("error", Text.from_markup(line).plain, e, e.ts) if line else None
    if isinstance(e, ev.Bootstrapped):
        return LogEntry("reply", f"✓ DHT bootstrapped ({plural(e.routing_table_size, 'peer')})", e, e.ts)
    if isinstance(e, ev.Registered):
        return LogEntry("reply", f"✓ announced namespace '{e.namespace}'", e, e.ts)
    if isinstance(e, ev.Discovered):
        return LogEntry("info", f"discovered {p(e.peer_id)} in '{e.namespace}'", e, e.ts)
    if isinstance(e, ev.PeerConnected):
        return LogEntry("received", f"+ connected {p(e.peer_id)} ({e.direction}, {e.addr})", e, e.ts)
    if isinstance(e, ev.PeerDisconnected):
        return LogEntry("info", f"- disconnected {p(e.peer_id)}", e, e.ts)
    if isinstance(e, ev.DHTUpdated):
        return LogEntry("info", f"routing table now {plural(e.size, 'peer')}", e, e.ts)
    if isinstance(e, ev.ErrorEvent):
        return LogEntry("error", f"! {e.where + ': ' if e.where else ''}{e.message}", e, e.ts)
    if isinstance(e, ev.MessageSent | ev.Reply | ev.MessageReceived):
        return None  # the Messages tab shows these
    text = human(e)  # the CLI's wording (Rich markup) for the other kinds
    if text is not None:
        return LogEntry("info", Text.from_markup(text).plain, e, e.ts)
    return None if e.transient else LogEntry("info", f"{e.kind}", e, e.ts)


class OverviewTab(NodeTab):
    TITLE = "Overview"
    BINDINGS = [Binding("c", "copy_address", "Copy addr")]
    DEFAULT_CSS = """
    OverviewTab #ov-top { height: 40%; min-height: 10; max-height: 18; }
    OverviewTab #ov-info { width: 1fr; height: auto; }
    OverviewTab #ov-right { width: 1fr; height: 1fr; }
    OverviewTab #ov-addrs { height: auto; max-height: 6; border: none; }
    OverviewTab #ov-plots { height: 1fr; min-height: 3; }
    OverviewTab #ov-events { height: 1fr; min-height: 3; }
    OverviewTab .section { color: $accent; text-style: bold; height: 1; }
    """

    def __init__(self, role: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.role = role
        self.peer_id = ""
        self.addrs: list[str] = []
        self._last_snap: Snapshot | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="ov-top"):
            yield Static(self._info_table(None), id="ov-info")
            with Vertical(id="ov-right"):
                yield Label("Listen addresses (c copies)", classes="section")
                yield OptionList(id="ov-addrs")
                # where the space beside the info table allows: two at 80x24, all six at 120x40
                yield PlotGrid(console(self.app).history, PLOTS, min_width=19, id="ov-plots")
        yield Label("Events", classes="section")
        yield LogView(limit=1000, id="ov-events")

    def _info_table(self, snap: Snapshot | None) -> Table:
        t = Table.grid(padding=(0, 1))
        t.add_column(style="bold", no_wrap=True, min_width=INFO_LABEL_WIDTH)
        t.add_column(no_wrap=True, overflow="ellipsis")
        stats: Stats | None = snap.stats if snap else None
        relay = snap.relay if snap else None
        reach = reachable_text(relay, time.time()) if relay else "unknown (no AutoNAT here)"
        dht_mode = snap.routing.mode if snap and snap.routing else "?"
        rows: list[tuple[str, str | Text]] = [
            ("Role", Text(self.role, style="bold")),
            ("Peer ID", middle(self.peer_id, self._value_width()) if self.peer_id else "starting…"),
        ]
        if stats is None:
            rows += [(k, "-") for k in ("Uptime", "Peers", "DHT", "Messages", "Replies", "Traffic")]
        else:
            rows += [
                ("Uptime", age(stats.uptime_s)),
                ("Peers", str(stats.connections)),
                ("DHT", f"{plural(stats.routing_table_size, 'peer')} ({dht_mode})"),
                ("Messages", f"in {stats.messages_in} · out {stats.messages_out}"),
                ("Replies", f"{stats.replies} · errors {stats.errors}"),
                ("Traffic", f"in {size(stats.bytes_in)} · out {size(stats.bytes_out)}"),
            ]
        rows += [("Reachability", reach), ("Dropped", f"{stats.events_dropped if stats else 0} events")]
        for k, v in rows:
            t.add_row(k, v)
        return t

    def _value_width(self) -> int:
        """Columns left for a value beside the labels (the panel's width less the label column,
        its gap and one blank before the next panel): a longer peer id is cut in the middle."""
        width = self.query_one("#ov-info", Static).size.width if self.is_mounted else 0
        return max(INFO_VALUE_MIN, (width or INFO_WIDTH_GUESS) - INFO_LABEL_WIDTH - 2)

    def on_resize(self) -> None:
        self.call_after_refresh(self._redraw_info)

    def _redraw_info(self) -> None:
        self.query_one("#ov-info", Static).update(self._info_table(self._last_snap))

    def set_identity(self, peer_id: str, addrs: list[str]) -> None:
        self.peer_id = peer_id
        self._set_addrs(addrs)
        self.query_one("#ov-info", Static).update(self._info_table(None))

    def _set_addrs(self, addrs: list[str]) -> None:
        if addrs == self.addrs:
            return
        self.addrs = list(addrs)
        ol = self.query_one("#ov-addrs", OptionList)
        highlighted = ol.highlighted
        ol.clear_options()
        ol.add_options([Option(a, id=a) for a in addrs])
        if addrs:
            ol.highlighted = min(highlighted or 0, len(addrs) - 1)

    def update_snapshot(self, snap: Snapshot) -> None:
        stats = snap.stats
        if stats is not None:
            self.peer_id = stats.peer_id
        self._set_addrs(snap.listen_addrs)
        self._last_snap = snap
        self.query_one("#ov-info", Static).update(self._info_table(snap))
        # the app's NodeHistory took this snapshot already (the same in-process and attached)
        self.query_one("#ov-plots", PlotGrid).refresh()

    def handle_events(self, events: list[ev.Event]) -> None:
        entries = [x for x in (event_entry(e) for e in events) if x is not None]
        self.query_one("#ov-events", LogView).append(entries)

    def filter_target(self) -> LogView:
        return self.query_one("#ov-events", LogView)

    def selected_address(self) -> str | None:
        ol = self.query_one("#ov-addrs", OptionList)
        if ol.highlighted is None or not self.addrs:
            return self.addrs[0] if self.addrs else None
        return self.addrs[min(ol.highlighted, len(self.addrs) - 1)]

    def action_copy_address(self) -> None:
        console(self.app).copy_my_address(self.selected_address())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        console(self.app).copy_my_address(self.selected_address())
