"""Overview: who am I, how am I doing (role, peer id, addresses, uptime, peers, DHT
size, messages, bandwidth with sparklines, reachability) and the recent node events."""

from __future__ import annotations

import time
from collections import deque

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, OptionList, Sparkline, Static
from textual.widgets.option_list import Option

from punch_net import events as ev
from punch_net.api import Snapshot, Stats
from punch_net.cli.render import human
from punch_tui.console import console
from punch_tui.format import age, middle, plural, rate, short_id, size
from punch_tui.tabs.base import NodeTab
from punch_tui.tabs.relay import reachable_text
from punch_tui.widgets.logview import LogEntry, LogView

HISTORY = 60
INFO_LABEL_WIDTH = 13  # "Reachability"
INFO_WIDTH_GUESS = 40  # the info panel at 80 columns, before its first layout
INFO_VALUE_MIN = 12


def event_entry(e: ev.Event) -> LogEntry | None:
    """A one-line, human summary of a node event for the Overview event log."""
    p = short_id
    if isinstance(e, ev.Listening):
        return LogEntry("info", f"listening as {p(e.peer_id)} on {len(e.addrs)} address(es)", e, e.ts)
    if isinstance(e, ev.BootstrapRetry):
        return LogEntry("error", f"bootstrap {e.addr} unreachable ({e.error}); retry in {e.retry_in:g}s",
                        e, e.ts)
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
    OverviewTab #ov-top { height: auto; max-height: 11; }
    OverviewTab #ov-info { width: 1fr; height: auto; }
    OverviewTab #ov-right { width: 1fr; height: auto; max-height: 11; }
    OverviewTab #ov-addrs { height: auto; max-height: 6; border: none; }
    OverviewTab .spark-label { width: 14; color: $foreground-muted; }
    OverviewTab Sparkline { height: 1; width: 1fr; }
    OverviewTab .spark-row { height: 1; }
    OverviewTab #ov-events { height: 1fr; min-height: 3; }
    OverviewTab .section { color: $accent; text-style: bold; height: 1; }
    """

    def __init__(self, role: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.role = role
        self.peer_id = ""
        self.addrs: list[str] = []
        self._prev: tuple[float, int, int] | None = None
        self._last_snap: Snapshot | None = None
        self.rate_in: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self.rate_out: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)

    def compose(self) -> ComposeResult:
        with Horizontal(id="ov-top"):
            yield Static(self._info_table(None), id="ov-info")
            with Vertical(id="ov-right"):
                yield Label("Listen addresses (c copies)", classes="section")
                yield OptionList(id="ov-addrs")
                with Horizontal(classes="spark-row"):
                    yield Label("in  0 B/s", id="ov-in-label", classes="spark-label")
                    yield Sparkline(list(self.rate_in), id="ov-spark-in")
                with Horizontal(classes="spark-row"):
                    yield Label("out 0 B/s", id="ov-out-label", classes="spark-label")
                    yield Sparkline(list(self.rate_out), id="ov-spark-out")
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
        # Traffic is the node's own wire-byte count (closed connections included), in both modes.
        # A snapshot without stats (node starting, link down) is no sample: a rate from 0 to
        # the counters' total would draw an attached node's whole history as one spike.
        if stats is not None:
            b_in, b_out = stats.bytes_in, stats.bytes_out
            if self._prev is not None:
                dt = max(1e-3, snap.ts - self._prev[0])
                self.rate_in.append(max(0.0, (b_in - self._prev[1]) / dt))
                self.rate_out.append(max(0.0, (b_out - self._prev[2]) / dt))
            self._prev = (snap.ts, b_in, b_out)
        self._last_snap = snap
        self.query_one("#ov-info", Static).update(self._info_table(snap))
        self.query_one("#ov-spark-in", Sparkline).data = list(self.rate_in)
        self.query_one("#ov-spark-out", Sparkline).data = list(self.rate_out)
        self.query_one("#ov-in-label", Label).update(f"in  {rate(self.rate_in[-1])}")
        self.query_one("#ov-out-label", Label).update(f"out {rate(self.rate_out[-1])}")

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
