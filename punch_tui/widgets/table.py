"""A DataTable that is kept in sync with a keyed row set, filtered by text and sorted
by a column. Rows are diffed on every update so a 1,000-row table refreshed once a
second only touches the cells that changed."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable


@functools.total_ordering
@dataclass(frozen=True, eq=True)
class Cell:
    """What a cell shows and what it sorts by (so '9 ms' sorts before '10 ms')."""

    text: str
    sort: Any = None
    style: str = ""

    def __rich__(self) -> Text:
        return Text(self.text, style=self.style, no_wrap=True, overflow="ellipsis")

    def _key(self) -> tuple[bool, Any]:
        value = self.text.lower() if self.sort is None else self.sort
        return (value is None, value)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Cell):
            return NotImplemented
        try:
            return self._key() < other._key()
        except TypeError:
            return str(self._key()) < str(other._key())


def cell(text: Any, sort: Any = None, style: str = "") -> Cell:
    return Cell(str(text), sort, style)


def matches(cells: list[Cell] | tuple[Cell, ...], needle: str) -> bool:
    """Case-insensitive substring match on any cell (an empty filter matches all)."""
    if not needle:
        return True
    needle = needle.lower()
    return any(needle in c.text.lower() for c in cells)


class FilterTable(DataTable[Cell]):
    """Keyed rows + text filter + column sort (click a header, or `s` / `S`)."""

    BINDINGS = [
        Binding("s", "cycle_sort", "Sort", tooltip="sort by the next column"),
        Binding("S", "reverse_sort", "Reverse", show=False),
    ]

    def __init__(self, columns: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._column_defs = columns
        self._all: dict[str, list[Cell]] = {}
        self._shown: dict[str, list[Cell]] = {}
        self.filter_text = ""
        self.sort_column: str | None = None
        self.sort_reverse = False

    def on_mount(self) -> None:
        for key, label in self._column_defs:
            self.add_column(label, key=key)

    # ---------------------------------------------------------------- data

    def set_rows(self, rows: dict[str, list[Cell]]) -> None:
        """Make the table show exactly `rows` (after the filter), touching only changes."""
        self._all = rows
        self._sync()

    def rebuild(self, rows: dict[str, list[Cell]]) -> None:
        """Show `rows` in columns sized afresh. A DataTable column only ever grows with its
        cells, so cells made narrower (a smaller terminal) need the columns made again."""
        keep = self.selected_key
        self.clear(columns=True)
        for key, label in self._column_defs:
            self.add_column(label, key=key)
        self._shown = {}
        self.set_rows(rows)
        self._apply_sort(keep)

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self._sync()

    @property
    def total_rows(self) -> int:
        return len(self._all)

    @property
    def selected_key(self) -> str | None:
        if not self._shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except Exception:
            return None

    def _sync(self) -> None:
        visible = {k: v for k, v in self._all.items() if matches(v, self.filter_text)}
        keep = self.selected_key
        changed = False
        for key in [k for k in self._shown if k not in visible]:
            self.remove_row(key)
            changed = True
        col_keys = [k for k, _ in self._column_defs]
        for key, cells in visible.items():
            old = self._shown.get(key)
            if old is cells:
                continue
            if old is None:
                self.add_row(*cells, key=key)
                changed = True
            elif old != cells:
                for col, a, b in zip(col_keys, old, cells, strict=False):
                    if a != b:
                        self.update_cell(key, col, b)
                        changed = changed or col == self.sort_column
        self._shown = visible
        if changed:
            self._apply_sort(keep)

    # ---------------------------------------------------------------- sorting

    def _apply_sort(self, keep: str | None = None) -> None:
        if self.sort_column is not None and self.row_count:
            self.sort(self.sort_column, reverse=self.sort_reverse)
        if keep is not None and keep in self._shown:
            try:
                self.move_cursor(row=self.get_row_index(keep), animate=False)
            except Exception:
                pass
        self._label_columns()

    def _label_columns(self) -> None:
        for key, label in self._column_defs:
            column = self.columns.get(key)  # type: ignore[call-overload]
            if column is None:
                continue
            mark = ""
            if key == self.sort_column:
                mark = " ▼" if self.sort_reverse else " ▲"
            column.label = Text(label + mark)
        self.refresh()

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._apply_sort(self.selected_key)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def action_cycle_sort(self) -> None:
        keys = [k for k, _ in self._column_defs]
        nxt = keys[0] if self.sort_column not in keys else keys[(keys.index(self.sort_column) + 1) % len(keys)]
        self.sort_by(nxt, reverse=False)

    def action_reverse_sort(self) -> None:
        if self.sort_column is None:
            self.sort_column = self._column_defs[0][0]
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    def column_texts(self, column: str) -> list[str]:
        """The visible texts of one column, top to bottom (for tests and copy)."""
        return [self.get_cell(row.key, column).text for row in self.ordered_rows]
