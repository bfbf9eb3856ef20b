"""A one-line prompt with inline validation, opened from the command palette
(dial…, find…, ping…, send…): bad input shows the reason under the field."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label

from punch_tui.peers import InputError

Validator = Callable[[str], str]


class PromptScreen(ModalScreen[str | None]):
    """Returns the validated value, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    PromptScreen { align: center top; }
    PromptScreen > Vertical { width: 76; max-width: 100%; height: auto; margin-top: 3;
                              border: round $primary; background: $surface; padding: 0 1; }
    PromptScreen #prompt-error { color: $error; height: auto; }
    PromptScreen #prompt-hint { color: $foreground-muted; }
    """

    def __init__(self, title: str, validate: Validator, suggestions: list[str] | None = None,
                 placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.validate = validate
        self.suggestions = suggestions or []
        self.placeholder = placeholder
        self.initial = value

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self.title_text
            yield Input(value=self.initial, placeholder=self.placeholder, id="prompt-input",
                        suggester=SuggestFromList(self.suggestions) if self.suggestions else None)
            yield Label("", id="prompt-error")
            yield Label("enter confirms · tab/→ completes · esc cancels", id="prompt-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            value = self.validate(event.value)
        except InputError as exc:
            self.query_one("#prompt-error", Label).update(f"✗ {exc}")
            return
        self.dismiss(value)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#prompt-error", Label).update("")

    def action_cancel(self) -> None:
        self.dismiss(None)
