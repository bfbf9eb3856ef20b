"""The node stopped: say why in one line, keep the last data readable behind it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class NodeErrorScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("q", "app.quit", "Quit"),
        Binding("escape", "dismiss", "Look at the last data"),
    ]
    DEFAULT_CSS = """
    NodeErrorScreen { align: center middle; }
    NodeErrorScreen > Vertical { width: 72; max-width: 100%; height: auto; border: heavy $error;
                                 background: $surface; padding: 1 2; }
    NodeErrorScreen #err-title { text-style: bold; color: $error; }
    NodeErrorScreen #err-reason { margin: 1 0; }
    NodeErrorScreen #err-keys { color: $foreground-muted; }
    """

    def __init__(self, title: str, reason: str) -> None:
        super().__init__()
        self.title_text = title
        self.reason = reason

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, id="err-title")
            yield Static(self.reason, id="err-reason", markup=False)
            yield Static("q quit · esc look at the last data", id="err-keys")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
