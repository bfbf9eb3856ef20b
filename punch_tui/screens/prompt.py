"""A one-line prompt with inline validation, opened from the command palette
(dial…, find…, ping…, send…): bad input shows the reason under the field."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Input, Label

from punch_tui.peers import InputError, complete

Validator = Callable[[str], str]


class Completions(Suggester):
    """The grey suggestion and the tab completion of a prompt: the same pick (peers.complete)."""

    def __init__(self, options: Sequence[str]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.options = list(options)

    def complete(self, value: str) -> str | None:
        return complete(value, self.options)

    async def get_suggestion(self, value: str) -> str | None:
        found = self.complete(value)
        # the Input draws a suggestion as the rest after what was typed: prefix matches only
        return found if found is not None and found.lower().startswith(value.lower()) else None


class PromptInput(Input):
    """Tab completes (Input only binds → to accept a suggestion; tab would move focus)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("tab", "complete", "Complete", show=False)]

    def action_complete(self) -> None:
        if isinstance(self.suggester, Completions):
            found = self.suggester.complete(self.value)
            if found is not None:
                self.value = found
                self.cursor_position = len(found)


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
            yield PromptInput(value=self.initial, placeholder=self.placeholder, id="prompt-input",
                              suggester=Completions(self.suggestions))
            yield Label("", id="prompt-error")
            yield Label("enter confirms · tab/→ completes · esc cancels", id="prompt-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            value = self.validate(event.value)
        except InputError as exc:
            self.query_one("#prompt-error", Label).update(Text(f"✗ {exc}"))  # not markup: [/p2p/ID]
            return
        self.dismiss(value)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#prompt-error", Label).update("")

    def action_cancel(self) -> None:
        self.dismiss(None)
