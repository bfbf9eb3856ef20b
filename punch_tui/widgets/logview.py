"""A bounded, virtualised log: only the visible lines are rendered, and only the
newest `limit` entries are kept, so 100,000 appended lines cost bounded memory and
the same time per frame as 20."""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

DEFAULT_LIMIT = 10_000


@dataclass(slots=True)
class LogEntry:
    """One log line: `kind` picks the colour (sent, received, reply, error, info).

    `source` is the node event (or a dict) behind the line; its JSON is only built when
    the line is selected, so 10,000 kept lines cost little memory."""

    kind: str
    text: str
    source: Any = None
    ts: float = field(default_factory=time.time)
    seq: int = 0

    def line(self) -> str:
        return f"{time.strftime('%H:%M:%S', time.localtime(self.ts))} {self.text}"

    def detail(self) -> str:
        data = self.source.to_json() if hasattr(self.source, "to_json") else (self.source or {})
        return json.dumps(data, indent=2, default=str, sort_keys=False)


class LogView(ScrollView, can_focus=True):
    """Newest at the bottom; follows the tail until the cursor moves up."""

    COMPONENT_CLASSES = {
        "log--sent", "log--received", "log--reply", "log--error", "log--info", "log--cursor",
    }
    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "move(-10)", "PgUp", show=False),
        Binding("pagedown", "move(10)", "PgDn", show=False),
        Binding("home,g", "jump_home", "Top", show=False),
        Binding("end,G", "jump_end", "End (follow)", show=False),
    ]
    DEFAULT_CSS = """
    LogView { background: $surface; }
    LogView > .log--sent { color: $primary; }
    LogView > .log--received { color: $secondary; }
    LogView > .log--reply { color: $success; }
    LogView > .log--error { color: $error; text-style: bold; }
    LogView > .log--info { color: $foreground-muted; }
    LogView > .log--cursor { background: $accent 40%; text-style: bold; }
    """

    cursor: reactive[int] = reactive(-1, repaint=True, layout=False)

    class Selected(Message):
        def __init__(self, entry: LogEntry | None) -> None:
            super().__init__()
            self.entry = entry

    def __init__(self, limit: int = DEFAULT_LIMIT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit
        self.entries: deque[LogEntry] = deque(maxlen=limit)
        self._view: list[LogEntry] | None = None  # filtered entries, None = all
        self.filter_text = ""
        self.follow = True
        self._seq = 0
        self.appended = 0

    # ---------------------------------------------------------------- data

    def append(self, entries: list[LogEntry]) -> None:
        if not entries:
            return
        for e in entries:
            self._seq += 1
            e.seq = self._seq
        self.appended += len(entries)
        self.entries.extend(entries)
        if self._view is not None:
            self._view.extend(e for e in entries if self._match(e))
            floor = self.entries[0].seq if self.entries else 0
            if self._view and self._view[0].seq < floor:
                self._view = [e for e in self._view if e.seq >= floor]
        self._resize()
        if self.follow:
            self.cursor = self.count - 1
            self.scroll_end(animate=False, immediate=False)
        self.refresh()

    def clear(self) -> None:
        self.entries.clear()
        self._view = [] if self._view is not None else None
        self.cursor = -1
        self._resize()
        self.refresh()

    @property
    def count(self) -> int:
        return len(self._view) if self._view is not None else len(self.entries)

    def entry(self, index: int) -> LogEntry | None:
        if index < 0 or index >= self.count:
            return None
        return self._view[index] if self._view is not None else self.entries[index]

    @property
    def selected(self) -> LogEntry | None:
        return self.entry(self.cursor)

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._view = [e for e in self.entries if self._match(e)] if self.filter_text else None
        self.follow = True
        self.cursor = self.count - 1
        self._resize()
        self.scroll_end(animate=False, immediate=False)
        self.refresh()

    def _match(self, e: LogEntry) -> bool:
        return not self.filter_text or self.filter_text in e.text.lower()

    def visible_texts(self) -> list[str]:
        return [self.entry(i).text for i in range(self.count)]  # type: ignore[union-attr]

    def _resize(self) -> None:
        self.virtual_size = Size(self.size.width, self.count)

    # ---------------------------------------------------------------- render

    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_offset.y) + y
        width = self.size.width
        entry = self.entry(index)
        if entry is None:
            return Strip.blank(width, self.rich_style)
        style: Style = self.get_component_rich_style(f"log--{entry.kind}", partial=True)
        base = self.rich_style + style
        if index == self.cursor and self.has_focus:
            base += self.get_component_rich_style("log--cursor", partial=True)
        text = entry.line()[int(self.scroll_offset.x):]
        if len(text) > width:  # say that the line goes on (its whole text: the JSON pane, the filter)
            text = text[:width - 1] + "…"
        text = text.ljust(width)
        return Strip([Segment(text, base)], width)

    def watch_cursor(self, old: int, new: int) -> None:
        self.post_message(self.Selected(self.entry(new)))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # ---------------------------------------------------------------- keys

    def action_move(self, delta: int) -> None:
        if not self.count:
            return
        self.cursor = max(0, min(self.count - 1, self.cursor + delta))
        self.follow = self.cursor == self.count - 1
        self._scroll_to_cursor()

    def action_jump_home(self) -> None:
        self.cursor = 0 if self.count else -1
        self.follow = False
        self.scroll_home(animate=False)

    def action_jump_end(self) -> None:
        self.cursor = self.count - 1
        self.follow = True
        self.scroll_end(animate=False)

    def _scroll_to_cursor(self) -> None:
        top = int(self.scroll_offset.y)
        height = max(1, self.size.height)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False)

    def on_click(self, event: Any) -> None:
        index = int(self.scroll_offset.y) + event.y
        if 0 <= index < self.count:
            self.cursor = index
            self.follow = self.cursor == self.count - 1
