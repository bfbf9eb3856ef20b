"""Relay: what the node reports through the optional `node.relay_status()` snapshot
(a dict; scalar values are shown as key/value lines, a list of dicts as a table, e.g.
reservations or circuits). The NAT/relay work fills it; other roles say so."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from textual.app import ComposeResult
from textual.widgets import Static

from punch_tui.snapshot import Snapshot
from punch_tui.tabs.base import NodeTab
from punch_tui.tabs.transfers import _fmt, rows_from_dicts
from punch_tui.widgets.table import FilterTable

NOT_RUNNING = "Relay is not running in this role (no relay service or reservations here)."


class RelayTab(NodeTab):
    TITLE = "Relay"
    DEFAULT_CSS = """
    RelayTab #relay-info { height: auto; padding: 0 1; }
    RelayTab FilterTable { height: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._columns: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield Static("waiting for the node…", id="relay-info")

    def update_snapshot(self, snap: Snapshot) -> None:
        info = self.query_one("#relay-info", Static)
        if snap.relay is None:
            info.update(NOT_RUNNING)
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        table_items: list[dict[str, Any]] = []
        for key, value in snap.relay.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                table_items += [{"kind": key, "id": f"{key}:{i}", **v} for i, v in enumerate(value)]
                grid.add_row(key.replace("_", " "), f"{len(value)}")
            else:
                grid.add_row(key.replace("_", " "), _fmt(value))
        info.update(grid)
        columns, rows = rows_from_dicts(table_items)
        if columns != self._columns:
            for old in self.query(FilterTable):
                old.remove()
            self._columns = columns
            if columns:
                table = FilterTable(columns)
                self.mount(table)
                self.call_after_refresh(table.set_rows, rows)
            return
        for t in self.query(FilterTable):
            t.set_rows(rows)

    def filter_target(self) -> FilterTable | None:
        tables = list(self.query(FilterTable))
        return tables[0] if tables else None
