"""Transfers: whatever the node reports through the optional `node.transfers()`
snapshot (a list of dicts, one per transfer; each key becomes a column). The torrent
roles fill it; other roles show that they have no transfers."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import Static

from punch_tui.snapshot import Snapshot
from punch_tui.tabs.base import NodeTab
from punch_tui.widgets.table import Cell, FilterTable, cell

NOT_RUNNING = "Transfers are not running in this role (start a torrent role to see them)."


def rows_from_dicts(items: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], dict[str, list[Cell]]]:
    """Columns (in first-seen key order) and keyed rows from a list of flat dicts."""
    keys: list[str] = []
    for item in items:
        for k in item:
            if k not in keys:
                keys.append(k)
    rows: dict[str, list[Cell]] = {}
    for i, item in enumerate(items):
        row_key = str(item.get("id", item.get("name", i)))
        rows[row_key] = [cell(_fmt(item.get(k)), item.get(k) if isinstance(item.get(k), int | float) else None)
                         for k in keys]
    return [(k, k.replace("_", " ").capitalize()) for k in keys], rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)


class TransfersTab(NodeTab):
    TITLE = "Transfers"
    DEFAULT_CSS = """
    TransfersTab #tr-status { height: auto; color: $foreground-muted; padding: 0 1; }
    TransfersTab FilterTable { height: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._columns: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield Static("waiting for the node…", id="tr-status")

    def update_snapshot(self, snap: Snapshot) -> None:
        status = self.query_one("#tr-status", Static)
        if snap.transfers is None:
            status.update(NOT_RUNNING)
            return
        columns, rows = rows_from_dicts(snap.transfers)
        status.update(f"{len(rows)} transfer(s)")
        if columns != self._columns:
            for old in self.query(FilterTable):
                old.remove()
            self._columns = columns
            if columns:
                self.mount(FilterTable(columns, id="tr-table"))
                self.call_after_refresh(self._fill, rows)
            return
        self._fill(rows)

    def _fill(self, rows: dict[str, list[Cell]]) -> None:
        for table in self.query(FilterTable):
            table.set_rows(rows)

    def filter_target(self) -> FilterTable | None:
        tables = list(self.query(FilterTable))
        return tables[0] if tables else None
