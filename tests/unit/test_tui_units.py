"""Pure parts of punch-tui, without a terminal or a network: formatting, input checks,
peer completion, theme files, the table's diff/filter/sort and the bounded log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from punch_net import events as ev
from punch_net.torrent.events import human_size
from punch_tui.bridge import describe_failure
from punch_tui.format import age, failure, middle, ms, plural, rate, short_id, short_proto, size
from punch_tui.main import main as tui_main
from punch_tui.peers import InputError, PeerBook, check_command, check_dial, complete
from punch_tui.tabs.dht import fill_bar
from punch_tui.tabs.messages import message_entry
from punch_tui.themes import ThemeError, load_themes, parse_theme, resolve_name
from punch_tui.widgets.logview import LogEntry, LogView
from punch_tui.widgets.table import Cell, FilterTable, cell, matches

PEER_A = "12D3KooWRfpyZhXK5exR8uPckhBcXkiYBpbGBKAZHxBTDBvrchSR"
PEER_B = "12D3KooWJcSBh4xr4zdommhJoS1CJLDQFLXPwWWVbM3AvR81Wzir"


def test_formatting() -> None:
    assert short_id(PEER_A) == "…DBvrchSR"
    assert age(5) == "5s" and age(125) == "2m05s" and age(4000) == "1h06m" and age(None) == "-"
    assert rate(999) == "999 B/s" and rate(1_500_000) == "1.4 MiB/s"
    # binary units, as the CLI prints them (issue 15: "4.8 MiB" there, "5.0 MB" here)
    assert size(2_048) == "2.0 KiB" and size(5_000_000) == "4.8 MiB" and size(3 << 30) == "3.0 GiB"
    assert size(5_000_000) == human_size(5_000_000)
    assert size(1023.9 * 1024) == "1024 KiB" and max(len(size(1.5 ** i)) for i in range(90)) <= 8
    assert plural(1, "peer") == "1 peer" and plural(0, "peer") == "0 peers"
    assert middle(PEER_A, 20) == "12D3KooWRf…TDBvrchSR" and middle(PEER_A, 60) == PEER_A
    assert ms(0.1234) == "0.12 ms" and ms(None) == "-"
    assert short_proto("/ipfs/kad/1.0.0") == "kad" and short_proto("/punch/cmd/1.0.0") == "punch/cmd"
    assert fill_bar(10) == "█████░░░░░"


def test_check_dial_uses_the_node_parser() -> None:
    assert check_dial(" /ip4/127.0.0.1/tcp/4001 ") == "/ip4/127.0.0.1/tcp/4001"
    assert check_dial(f" {PEER_A} ") == PEER_A  # the node looks a bare peer id up
    assert check_dial(f"/p2p/{PEER_A}") == f"/p2p/{PEER_A}"
    for bad in ("", "/ip4/999.1.1.1/tcp/1", "hello", "/ip4/127.0.0.1/udp/1", PEER_A[:-3] + "000"):
        with pytest.raises(InputError):
            check_dial(bad)
    for half_typed in (PEER_A[:10], PEER_A[:-1], f"/p2p/{PEER_A[:12]}"):  # base58, but not a whole id
        with pytest.raises(InputError, match="not a whole peer id"):
            check_dial(half_typed)


def test_complete_picks_what_tab_fills_in() -> None:
    options = [PEER_A, PEER_B, f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_A}"]
    assert complete(PEER_A[:6], options) == PEER_A  # first prefix match, in the given order
    assert complete(PEER_B[:9].lower(), options) == PEER_B  # case-insensitive, as the suggestion shows
    assert complete("/ip4/127", options) == options[2]
    assert complete("…" + PEER_B[-6:], options) == PEER_B  # a short id as tables show it
    assert complete(PEER_A[-6:], options) is None  # two options end with it: ambiguous
    assert complete("", options) == PEER_A
    assert complete(PEER_A, options) is None and complete("zzz", options) is None
    assert complete("di", ["dial ", "find "]) == "dial "


def test_check_command() -> None:
    assert check_command("message", "hi there") == ("message", {"text": "hi there"})
    assert check_command("", "hi") == ("message", {"text": "hi"})
    assert check_command("echo", '{"a": 1}') == ("echo", {"a": 1})
    assert check_command("ping", "") == ("ping", {})
    with pytest.raises(InputError, match="not valid JSON"):
        check_command("echo", "{nope")
    with pytest.raises(InputError, match="JSON object"):
        check_command("echo", "[1, 2]")
    with pytest.raises(InputError, match="bad command"):
        check_command("rm -rf", "")
    with pytest.raises(InputError, match="message text"):
        check_command("message", "  ")


def test_peer_book_completion_and_resolution() -> None:
    book = PeerBook()
    book.me = PEER_B
    book.learn(PEER_B, ["/ip4/1.2.3.4/tcp/1"])  # ourselves: ignored
    book.handle_event(ev.Discovered(peer_id=PEER_A, addrs=["/ip4/127.0.0.1/tcp/4001"], namespace="x"))
    assert book.peer_ids() == [PEER_A]
    assert book.dial_addrs() == [f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_A}"]
    assert book.dial_targets() == [PEER_A, f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_A}", f"/p2p/{PEER_A}"]
    assert book.resolve("…DBvrchSR") == PEER_A  # the short form shown in logs
    assert book.resolve(PEER_A[:14]) == PEER_A
    with pytest.raises(InputError, match="unknown peer"):
        book.resolve("zzz")
    with pytest.raises(InputError, match="choose a peer"):
        book.resolve(" ")
    with pytest.raises(InputError, match="not a valid peer id"):
        book.resolve("12D3KooW" + "0" * 44)  # base58 has no 0
    assert book.resolve(PEER_B[:-1] + "X") == PEER_B[:-1] + "X"  # well-formed, unknown: the node will try


def test_palette_tab_completions() -> None:
    from types import SimpleNamespace

    from punch_net.config import NodeConfig
    from punch_tui.palette import completions

    book = PeerBook()
    book.learn(PEER_A, ["/ip4/127.0.0.1/tcp/4001"])
    book.learn(PEER_B, [])
    book.connected = {PEER_B}
    app = SimpleNamespace(peers=book, node_config=NodeConfig(role="listener", namespace="chat"),
                          available_themes={"punch-dark": 1, "punch-light": 1}, my_addrs=["/ip4/1.2.3.4/tcp/5"])
    verbs = ["dial", "find", "send", "ping", "theme", "copy"]
    assert completions(app, "di", verbs) == "dial "  # type: ignore[arg-type]
    assert completions(app, "c", verbs) == "copy "  # type: ignore[arg-type]
    assert completions(app, "dial ", verbs) == f"dial {PEER_B}"  # type: ignore[arg-type]  # connected first
    assert completions(app, f"ping {PEER_A[:12]}", verbs) == f"ping {PEER_A}"  # type: ignore[arg-type]
    assert completions(app, "dial /ip4/127", verbs) == f"dial /ip4/127.0.0.1/tcp/4001/p2p/{PEER_A}"  # type: ignore[arg-type]
    assert completions(app, f"dial /p2p/{PEER_A[:12]}", verbs) == f"dial /p2p/{PEER_A}"  # type: ignore[arg-type]
    assert completions(app, f"send …{PEER_A[-8:]}", verbs) == f"send {PEER_A} "  # type: ignore[arg-type]
    assert completions(app, f"send {PEER_A} hel", verbs) is None  # type: ignore[arg-type]  # free text
    assert completions(app, "theme punch-l", verbs) == "theme punch-light"  # type: ignore[arg-type]
    assert completions(app, "find ", verbs) == "find chat"  # type: ignore[arg-type]
    assert completions(app, "zz", verbs) is None  # type: ignore[arg-type]


def test_theme_files(tmp_path: Path) -> None:
    themes, errors = load_themes()
    assert not errors
    names = {t.name for t in themes}
    assert {"punch-dark", "punch-light", "punch-high-contrast"} <= names
    assert resolve_name("light") == "punch-light"
    with pytest.raises(ThemeError, match="not a colour"):
        parse_theme({"name": "x", "colors": {"primary": "nope"}}, "x.toml")
    with pytest.raises(ThemeError, match="unknown colour"):
        parse_theme({"name": "x", "colors": {"primary": "#000000", "sparkle": "#fff"}}, "x.toml")
    (tmp_path / "broken.toml").write_text("name = [")
    (tmp_path / "ok.toml").write_text('name = "ok"\n[colors]\nprimary = "#112233"\n')
    themes, errors = load_themes(tmp_path)
    assert [t.name for t in themes] == ["ok"] and len(errors) == 1 and "broken.toml" in errors[0]


def test_cells_sort_by_value_not_text() -> None:
    a, b = cell("9.00 ms", 9.0), cell("10 ms", 10.0)
    assert a < b and not (b < a)
    assert [c.text for c in sorted([cell("b"), cell("A"), cell("c")])] == ["A", "b", "c"]  # text, no case
    assert len(sorted([cell("-"), cell("1", 1)])) == 2  # mixed kinds never raise
    assert matches([cell("Hello"), Cell("x")], "hell") and not matches([cell("a")], "b")


def test_message_entries() -> None:
    sent = message_entry(ev.MessageSent(peer_id=PEER_A, id="x-1", command="message", args={"text": "hi"}))
    assert sent is not None and sent.kind == "sent"
    assert sent.text == f"→ SENT {short_id(PEER_A)}: hi"  # the text first; the id is in the JSON pane
    ping = message_entry(ev.MessageSent(peer_id=PEER_A, id="x-2", command="ping", args={}))
    assert ping is not None and ping.text == f"→ SENT ping {short_id(PEER_A)}: {{}}"
    recv = message_entry(ev.MessageReceived(peer_id=PEER_A, id="y-12", command="message",
                                            args={"text": "Hello from dialer! Message #12"}, sender=""))
    assert recv is not None and recv.text.endswith(": Hello from dialer! Message #12")
    assert len(recv.line()) <= 72  # with its time, inside 80 columns
    reply = message_entry(ev.Reply(peer_id=PEER_A, id="y-12", ok=True, rtt_ms=12.34,
                                   result={"received": True, "echo": "Hello from dialer! Message #12", "by": PEER_B}))
    assert reply is not None and reply.text == f"← REPLY {short_id(PEER_A)} 12.3 ms: ✓ Hello from dialer! Message #12"
    assert len(reply.line()) <= 80
    err = message_entry(ev.Reply(peer_id=PEER_A, id="x-1", ok=False, error={"code": "E", "message": "m"}))
    assert err is not None and err.kind == "error"
    assert json.loads(sent.detail())["args"] == {"text": "hi"}
    assert message_entry(ev.DHTUpdated(size=1)) is None


def test_describe_failure_unwraps_groups() -> None:
    class ListenError(Exception):
        pass

    exc = BaseExceptionGroup("x", [ListenError("cannot listen on 127.0.0.1:1: in use")])
    assert describe_failure(exc) == "cannot listen on 127.0.0.1:1: in use"
    assert describe_failure(RuntimeError()) == "RuntimeError"


class _Host(App[None]):
    def __init__(self, widget: object) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget  # type: ignore[misc]


def test_filter_table_diff_filter_sort() -> None:
    async def scenario() -> None:
        table = FilterTable([("name", "Name"), ("n", "N")])
        async with _Host(table).run_test() as pilot:
            table.set_rows({"a": [cell("alpha"), cell(3, 3)], "b": [cell("beta"), cell(10, 10)],
                            "c": [cell("gamma"), cell(2, 2)]})
            await pilot.pause()
            table.sort_by("n")
            assert table.column_texts("name") == ["gamma", "alpha", "beta"]
            table.sort_by("n")  # same column again: reversed
            assert table.column_texts("name") == ["beta", "alpha", "gamma"]
            table.set_filter("ta")
            assert table.column_texts("name") == ["beta"]
            table.set_filter("")
            table.set_rows({"a": [cell("alpha"), cell(30, 30)], "c": [cell("gamma"), cell(2, 2)]})  # b gone, a changed
            assert table.column_texts("name") == ["alpha", "gamma"] and table.total_rows == 2

    asyncio.run(scenario())


def test_log_view_is_bounded_and_filters() -> None:
    async def scenario() -> None:
        log = LogView(limit=1000)
        async with _Host(log).run_test(size=(80, 10)) as pilot:
            for start in range(0, 20_000, 500):
                log.append([LogEntry("sent", f"line {i}") for i in range(start, start + 500)])
            await pilot.pause()
            assert log.count == 1000 and log.appended == 20_000
            assert log.visible_texts()[0] == "line 19000" and log.selected is not None
            log.set_filter("line 1999")
            assert log.visible_texts() == [f"line 1999{i}" for i in range(10)]
            log.append([LogEntry("sent", "line 19999x")])
            assert log.count == 11
            log.set_filter("")
            assert log.count == 1000
            log.append([LogEntry("sent", "x" * 100)])  # longer than the view: cut with an ellipsis
            await pilot.pause()
            last = log.render_line(log.count - 1 - int(log.scroll_offset.y)).text
            assert len(last) == log.size.width and last.endswith("x…")

    asyncio.run(scenario())


def test_main_rejects_unknown_theme_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PUNCH_CONFIG", str(tmp_path / "c.toml"))
    assert tui_main(["--theme", "nope"]) == 2
    assert "unknown theme 'nope'" in capsys.readouterr().err


def test_saved_theme_is_read_from_the_config(tmp_path: Path) -> None:
    from punch_net.config import update_config_file
    from punch_tui.main import _saved_theme

    cfg = tmp_path / "config.toml"
    assert _saved_theme(cfg) is None
    update_config_file(cfg, "tui", "theme", "punch-light")
    assert _saved_theme(cfg) == "punch-light"
    cfg.write_text("[tui\n")  # a broken file: the default theme is used
    assert _saved_theme(cfg) is None


def test_failure_text_does_not_say_the_verb_twice() -> None:
    assert failure("dial 12D3…abcd", "dial 12D3KooWx: timed out") == "dial 12D3KooWx: timed out"
    assert failure("ping 12D3…abcd", "connection reset") == "ping 12D3…abcd: connection reset"
    assert failure("find simple-chat", "finding is slow") == "find simple-chat: finding is slow"
