"""Messages: the JSON command log (newest at the bottom, sent / received / replies in
their own colours and arrows), a pretty-printed JSON pane for the selected line, and a
compose bar to send a command or message to a chosen peer."""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Static

from punch_net import events as ev
from punch_tui.console import console
from punch_tui.format import short_id, size
from punch_tui.tabs.base import NodeTab
from punch_tui.widgets.logview import LogEntry, LogView


def _brief(value: object, limit: int = 120) -> str:
    text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _body(command: str, args: dict[str, object]) -> str:
    return str(args["text"]) if command == "message" and "text" in args else _brief(args)


def _what(command: str) -> str:
    """A plain message is the common case: only other commands are named on the line."""
    return "" if command == "message" else f"{command} "


def _reply_body(result: object) -> str:
    """A message's reply echoes the text (and names the peer, already on the line): show the text."""
    if isinstance(result, dict) and result.get("received") is True and "echo" in result:
        return f"✓ {result['echo']}"
    return _brief(result)


def message_entry(e: ev.Event) -> LogEntry | None:
    """One line per message, the useful text first: the request id and the full JSON are
    in the JSON pane (v), so that a line fits 80 columns (issue 15: cut at "Message #")."""
    p = short_id
    if isinstance(e, ev.MessageSent):
        return LogEntry("sent", f"→ SENT {_what(e.command)}{p(e.peer_id)}: {_body(e.command, e.args)}", e, e.ts)
    if isinstance(e, ev.Reply):
        if e.ok:
            return LogEntry("reply", f"← REPLY {p(e.peer_id)} {e.rtt_ms:.1f} ms: {_reply_body(e.result)}", e, e.ts)
        return LogEntry("error", f"← ERROR {p(e.peer_id)}: {_brief(e.error)}", e, e.ts)
    if isinstance(e, ev.MessageReceived):
        big = f" ({size(e.size)})" if e.size > 1024 else ""  # the event has a preview only
        return LogEntry("received", f"← RECV {_what(e.command)}{p(e.peer_id)}{big}: {_body(e.command, e.args)}",
                        e, e.ts)
    if isinstance(e, ev.ErrorEvent) and e.where in ("dialer", "cmd", "send", "tui"):
        return LogEntry("error", f"! {e.message}", e, e.ts)
    return None


class MessagesTab(NodeTab):
    TITLE = "Messages"
    BINDINGS = [
        Binding("c", "compose", "Compose"),
        Binding("v", "toggle_detail", "JSON pane"),
        Binding("x", "clear_log", "Clear"),
        Binding("escape", "focus_log", "Back to log", show=False),
    ]
    DEFAULT_CSS = """
    MessagesTab #msg-log { height: 1fr; min-height: 3; }
    MessagesTab #msg-detail { height: 7; border-top: solid $primary; padding: 0 1; overflow-y: auto; }
    MessagesTab #msg-detail.hidden { display: none; }
    MessagesTab #msg-compose { height: 1; margin-top: 1; }
    MessagesTab #msg-compose Input { height: 1; }
    MessagesTab #msg-peer { width: 26; }
    MessagesTab #msg-cmd { width: 14; }
    MessagesTab #msg-text { width: 1fr; }
    MessagesTab #msg-error { height: 1; color: $error; }
    MessagesTab .hint { width: auto; color: $foreground-muted; }
    """

    def compose(self) -> ComposeResult:
        yield LogView(id="msg-log")
        yield Static("select a line to see its JSON", id="msg-detail")
        with Horizontal(id="msg-compose"):
            yield Input(placeholder="peer (tab completes)", id="msg-peer", compact=True)
            yield Input(value="message", placeholder="command", id="msg-cmd", compact=True)
            yield Input(placeholder="text, or JSON args · enter sends", id="msg-text", compact=True)
        yield Label("", id="msg-error")

    @property
    def log_view(self) -> LogView:
        return self.query_one("#msg-log", LogView)

    def handle_events(self, events: list[ev.Event]) -> None:
        self.log_view.append([x for x in (message_entry(e) for e in events) if x is not None])

    def add_entries(self, entries: list[LogEntry]) -> None:
        self.log_view.append(entries)

    def set_peer_suggestions(self, peers: list[str]) -> None:
        self.query_one("#msg-peer", Input).suggester = SuggestFromList(peers, case_sensitive=True)

    def on_log_view_selected(self, event: LogView.Selected) -> None:
        detail = self.query_one("#msg-detail", Static)
        if event.entry is None:
            detail.update("select a line to see its JSON")
        else:
            from rich.syntax import Syntax

            detail.update(Syntax(event.entry.detail(), "json", theme="ansi_dark", word_wrap=True,
                                 background_color="default"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        peer = self.query_one("#msg-peer", Input).value
        command = self.query_one("#msg-cmd", Input).value
        text = self.query_one("#msg-text", Input)
        error = console(self.app).send_to_peer(peer, command, text.value)
        self.show_error(error or "")
        if not error:
            text.value = ""

    def show_error(self, text: str) -> None:
        self.query_one("#msg-error", Label).update(text)

    def filter_target(self) -> LogView:
        return self.log_view

    def action_compose(self) -> None:
        peer = self.query_one("#msg-peer", Input)
        (self.query_one("#msg-text", Input) if peer.value else peer).focus()

    def action_focus_log(self) -> None:
        self.log_view.focus()

    def action_toggle_detail(self) -> None:
        self.query_one("#msg-detail", Static).toggle_class("hidden")

    def action_clear_log(self) -> None:
        self.log_view.clear()
