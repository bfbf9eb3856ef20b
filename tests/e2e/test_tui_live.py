"""Pilot tests of punch-tui against real nodes in child processes (127.0.0.1 only).

Each test runs the app with `App.run_test()` on asyncio; the app's own node runs in
trio guest mode inside it, exactly as in production."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tui_net import Network, make_app, open_palette, screen_text, wait_palette_hit, wait_until

from punch_tui.format import short_id
from punch_tui.widgets.table import FilterTable

SIZE = (100, 30)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_discovery_shows_in_connections_and_dht(network: Network, tmp_path: Path) -> None:
    """A dialer finds both listeners through the DHT; they show up in Connections and DHT."""
    want = {lst.peer_id for lst in network.listeners}

    async def scenario() -> None:
        app = make_app(tmp_path, "dialer", [network.server.addr], interval=30.0)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: want <= {c.peer_id for c in app.last_snapshot.connections}
                             if app.last_snapshot else False, what="both listeners connected")
            await pilot.press("3")
            table = app.query_one("#conn-table", FilterTable)
            await wait_until(pilot, lambda: table.row_count >= 3, what="rows in the Connections table")
            shown = set(table.column_texts("peer"))
            assert {short_id(p, 12) for p in want} <= shown
            assert short_id(network.server.peer_id, 12) in shown
            await pilot.press("2")
            peers = app.query_one("#dht-peers", FilterTable)
            await wait_until(pilot, lambda: short_id(network.server.peer_id, 12) in peers.column_texts("peer"),
                             what="server in the routing table")
            text = await wait_until(pilot, lambda: (lambda t: t if short_id(network.server.peer_id, 12) in t
                                                    and "stale (>1h)" in t else "")(screen_text(app)),
                                    what="the DHT tab drawn")
            assert short_id(network.server.peer_id, 12) in text
            assert "stale (>1h)" in text
            await pilot.press("q")
        assert app.bridge.finished

    run(scenario())


def test_palette_dial_then_message_gets_reply(network: Network, tmp_path: Path) -> None:
    """ctrl+p `dial ADDR` connects; a message typed in the Messages tab gets a reply in the log."""
    target = network.listeners[0]

    async def scenario() -> None:
        app = make_app(tmp_path, "listener", [network.server.addr], namespace="tui-other")
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.bridge.running, what="node running")
            await open_palette(pilot, app)
            await pilot.press(*f"dial {target.addr}")
            await wait_palette_hit(pilot, app, f"dial {target.addr}")
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.last_snapshot and target.peer_id in
                             {c.peer_id for c in app.last_snapshot.connections}, what="palette dial connected")
            await pilot.press("4")
            await pilot.press("c")  # compose: focus the peer field
            await pilot.press(*target.peer_id[-10:])
            await pilot.press("tab", "tab")
            await pilot.press(*"hello from the tui")
            await pilot.press("enter")
            log = app.tab("messages").log_view
            await wait_until(pilot, lambda: any("REPLY" in t and "hello from the tui" in t
                                                for t in log.visible_texts()), what="the reply in the Messages log")
            assert any(t.startswith("→ SENT …") and t.endswith(": hello from the tui") for t in log.visible_texts())
            assert "hello from the tui" in screen_text(app)
            await pilot.press("q")

    run(scenario())


def test_bad_input_gives_inline_errors(network: Network, tmp_path: Path) -> None:
    """A malformed multiaddr in the palette and an unknown peer in compose: errors, no crash."""

    async def scenario() -> None:
        app = make_app(tmp_path, "listener", [network.server.addr])
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.bridge.running, what="node running")
            await open_palette(pilot, app)
            await pilot.press(*"dial /ip4/999.1.2.3/tcp/80")
            await wait_until(pilot, lambda: "✗" in screen_text(app), timeout=10, what="an error hit")
            text = screen_text(app)
            assert "999.1.2.3" in text
            await pilot.press("enter")  # choosing the error hit does nothing harmful
            await pilot.pause(0.3)
            await pilot.press("escape")
            await pilot.press("4", "c")
            await pilot.press(*"nosuchpeer", "tab", "tab", *"hi", "enter")
            await wait_until(pilot, lambda: "unknown peer 'nosuchpeer'" in screen_text(app), timeout=20,
                             what="the inline error")
            assert app.bridge.running
            await pilot.press("escape", "q")

    run(scenario())


def test_filter_and_sort_tables(network: Network, tmp_path: Path) -> None:
    """`/` narrows the Connections table, esc clears; `s`/`S` and header clicks sort."""
    b = network.listeners[1]

    async def scenario() -> None:
        app = make_app(tmp_path, "dialer", [network.server.addr], interval=30.0)
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one("#conn-table", FilterTable)
            await pilot.press("3")
            await wait_until(pilot, lambda: table.row_count >= 3, what="three connections")
            await pilot.press("slash", *b.peer_id[-8:])
            await wait_until(pilot, lambda: table.row_count == 1, timeout=5, what="filtered to one row")
            assert table.column_texts("peer") == [short_id(b.peer_id, 12)]
            await pilot.press("enter")  # keep the filter, back to the table
            assert table.row_count == 1 and table.has_focus
            await pilot.press("slash", "escape")
            await wait_until(pilot, lambda: table.row_count >= 3, timeout=5, what="filter cleared")
            table.focus()
            await pilot.press("s")  # sort by the first column (peer id, full id order)
            ids = [table.get_cell(r.key, "peer").sort for r in table.ordered_rows]
            assert ids == sorted(ids) and table.sort_column == "peer"
            await pilot.press("S")
            ids = [table.get_cell(r.key, "peer").sort for r in table.ordered_rows]
            assert ids == sorted(ids, reverse=True)
            await pilot.click("#conn-table", offset=(17, 0))  # the "Dir" header
            assert table.sort_column == "dir"
            await pilot.press("q")

    run(scenario())


def test_node_failure_shows_error_screen(tmp_path: Path) -> None:
    """A port already in use: the node cannot start; the error screen says why."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]

        async def scenario() -> None:
            app = make_app(tmp_path, "listener", port=port)
            async with app.run_test(size=(80, 24)) as pilot:
                await wait_until(pilot, lambda: "stopped with an error" in screen_text(app), timeout=20,
                                 what="error screen")
                assert str(port) in screen_text(app)
                await pilot.press("q")
            assert app.return_code == 1

        run(scenario())


def test_theme_switch_persists_to_config(tmp_path: Path) -> None:
    """Switching theme in the palette writes [tui] theme to the TOML config."""
    import tomllib

    async def scenario() -> None:
        app = make_app(tmp_path, "listener")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.bridge.running, what="node running")
            assert app.theme == "punch-dark"
            await open_palette(pilot, app)
            await pilot.press(*"theme punch-high")
            await wait_palette_hit(pilot, app, "punch-high-contrast")
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.theme == "punch-high-contrast", timeout=5, what="theme applied")
            await pilot.press("q")

    run(scenario())
    data = tomllib.loads((tmp_path / "config.toml").read_text())
    assert data == {"tui": {"theme": "punch-high-contrast"}}


def test_attach_commands_and_reconnect(network: Network, tmp_path: Path) -> None:
    """Attached to a headless listener: snapshots arrive, a dial goes through the control
    socket; when the node stops the console says so and retries; a node started again on
    the same socket is attached again."""
    from tui_net import Child

    from punch_net.config import NodeConfig
    from punch_tui.app import PunchApp

    env = {"PUNCH_DATA_DIR": str(tmp_path / "node"), "PUNCH_CONFIG": str(tmp_path / "config.toml")}
    target = network.listeners[0]
    node = Child("listener", "--bootstrap", network.server.addr, "--namespace", "tui-attach", cwd=tmp_path, env=env)
    again: Child | None = None
    try:
        sock = Path(str(node.wait("control")["path"]))

        async def scenario() -> None:
            nonlocal again
            app = PunchApp(NodeConfig(role="listener"), attach=sock, poll_interval=0.3)
            async with app.run_test(size=SIZE) as pilot:
                await wait_until(pilot, lambda: app.last_snapshot is not None, what="a snapshot over the socket")
                assert app.peers.me == node.peer_id and "attached" in app.title
                app.dial(target.addr)
                await wait_until(pilot, lambda: app.last_snapshot and target.peer_id in
                                 {c.peer_id for c in app.last_snapshot.connections}, what="dialled through the socket")
                node.stop()
                await wait_until(pilot, lambda: "retrying" in app.sub_title, timeout=15, what="disconnected")
                assert not app.bridge.running
                again = Child("listener", "--bootstrap", network.server.addr, cwd=tmp_path, env=env)
                await wait_until(pilot, lambda: app.bridge.running and app.peers.me == again.peer_id,
                                 what="attached to the restarted node")
                assert app.bridge.reconnects >= 1
                await pilot.press("q")
            assert app.bridge.finished

        run(scenario())
    finally:
        node.stop()
        if again is not None:
            again.stop()
