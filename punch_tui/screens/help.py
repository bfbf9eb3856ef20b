"""`?`: every key binding of the app and of each tab, in one scrollable table."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def _rows(bindings: list[BindingType]) -> list[tuple[str, str]]:
    out = []
    for b in bindings:
        if isinstance(b, Binding):
            if b.action.startswith("show_tab"):
                continue  # summarised as "1-6"
            keys, desc = (b.key_display or b.key), b.description or b.action
        else:
            keys, desc = b[0], (b[2] if len(b) > 2 else b[1])  # type: ignore[misc]
        pretty = " / ".join(k.replace("ctrl+", "^") for k in keys.split(","))
        out.append((pretty, desc))
    return out


def help_table(sections: list[tuple[str, list[BindingType]]]) -> Table:
    t = Table(box=None, show_header=False, padding=(0, 2))
    t.add_column(style="bold", no_wrap=True, min_width=16)
    t.add_column()
    for title, bindings in sections:
        rows = _rows(bindings)
        if not rows:
            continue
        t.add_row(f"[reverse] {title} [/reverse]", "")
        for key, desc in rows:
            t.add_row(key, desc)
        t.add_row("", "")
    return t


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 76; max-width: 100%; height: 90%; border: round $primary;
                                  background: $surface; padding: 0 1; }
    """

    def __init__(self, sections: list[tuple[str, list[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll() as vs:
            vs.border_title = "Keys — esc closes"
            yield Static(help_table(self.sections), id="help-body")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
