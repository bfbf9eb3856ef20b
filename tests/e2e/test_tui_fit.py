"""Issue 15, points 1, 5 and 6, as a new user meets them: the `/` filter's text on screen,
what fits 80 columns (peer id, message lines) and what uses 120 (the Transfers table),
binary units, one "routing table now 1 peer", ctrl+c quits, and $PUNCH_CONFIG as a file.

Pilot tests of the real app; its node runs in guest mode against real child processes."""

from __future__ import annotations

import asyncio
import html
import os
import re
import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from tui_net import Child, Network, free_port, make_app, wait_until

from punch_tui.widgets.keybar import KeyBar


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def screen_lines(app: Any) -> list[str]:
    """The screen as rows of text, from the SVG export: Rich draws the text of row r, column
    c at y = 20 + 24.4 r, x = 12.2 c (and leaves out runs of blanks, so place each by x)."""
    width, height = app.size
    rows = [[" "] * width for _ in range(height)]
    for attrs, text in re.findall(r"<text([^>]*)>(.*?)</text>", app.export_screenshot()):
        x, y = re.search(r'\bx="([\d.]+)"', attrs), re.search(r'\by="([\d.]+)"', attrs)
        if x is None or y is None or "-title" in attrs:
            continue
        row, col = round((float(y.group(1)) - 20) / 24.4), round(float(x.group(1)) / 12.2)
        for i, ch in enumerate(html.unescape(text).replace("\xa0", " ")):
            if 0 <= row < height and 0 <= col + i < width:
                rows[row][col + i] = ch
    return ["".join(r).rstrip() for r in rows]


def overview_texts(app: Any) -> list[str]:
    return list(app.tab("overview").filter_target().visible_texts())


def test_filter_text_shows_above_the_key_bar(network: Network, tmp_path: Path) -> None:
    """`/` then typing: the typed text is on screen, on its own line above the key bar,
    and the Overview's events narrow to it; esc clears and hides the bar again."""

    async def scenario() -> None:
        app = make_app(tmp_path, "listener", [network.server.addr], namespace="tui-fit")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: any("DHT bootstrapped" in t for t in overview_texts(app)),
                             what="bootstrapped")
            await pilot.press("slash", *"bootstr")
            bar, keys = app.query_one("#filter-bar"), app.query_one(KeyBar)
            await wait_until(pilot, lambda: bar.region.height == 1, timeout=10, what="the filter bar shown")
            assert bar.region.y == keys.region.y - 1  # its own line, not under the key bar
            lines = await wait_until(pilot, lambda: (lambda ls: ls if "bootstr" in ls[bar.region.y] else None)(
                screen_lines(app)), timeout=10, what="the typed text on the filter line")
            assert lines[bar.region.y].lstrip().startswith("/") and "Clear filter" in lines[keys.region.y]
            assert overview_texts(app) and all("bootstr" in t.lower() for t in overview_texts(app))
            await pilot.press("escape")
            await wait_until(pilot, lambda: bar.region.height == 0, timeout=10, what="the filter bar hidden")
            assert not any("bootstr" in line for line in screen_lines(app)[-2:])
            await pilot.press("q")

    run(scenario())


def test_ctrl_c_quits(network: Network, tmp_path: Path) -> None:
    """ctrl+c quits (and stops the node), from a table and from a text field alike."""

    async def scenario(in_field: bool) -> None:
        app = make_app(tmp_path, "listener", [network.server.addr], namespace="tui-fit")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.bridge.running, what="node running")
            if in_field:
                await pilot.press("4", "c", *"abc")  # the compose bar's peer field, no selection
                assert app.focused is not None and app.focused.id == "msg-peer"
            await pilot.press("ctrl+c")
            await wait_until(pilot, lambda: app.bridge.finished, timeout=20, what="the node stopped")
        assert app.return_code == 0 and app.bridge.finished

    run(scenario(False))
    run(scenario(True))


def test_overview_at_80_and_120_columns(network: Network, tmp_path: Path) -> None:
    """The peer id is cut in the middle with an ellipsis to fit (more of it at 120); the
    routing table line is said once and in the singular; traffic is in binary units."""

    async def scenario() -> None:
        app = make_app(tmp_path, "listener", [network.server.addr], namespace="tui-fit")
        async with app.run_test(size=(80, 24)) as pilot:
            me = await wait_until(pilot, lambda: app.peers.me, what="the node's peer id")
            await wait_until(pilot, lambda: any("DHT bootstrapped (1 peer)" in t for t in overview_texts(app)),
                             what="bootstrapped")
            await pilot.pause(1.5)  # a second DHTUpdated (the bug) came right after the first

            def id_line() -> str:
                return next((line for line in screen_lines(app) if line.startswith("Peer ID")), "")

            shown = id_line().split()[2]
            head, _, tail = shown.partition("…")
            assert tail and me.startswith(head) and me.endswith(tail) and len(head) >= 6 and len(tail) >= 6, shown
            assert len(shown) < len(me)
            updates = [t for t in overview_texts(app) if t.startswith("routing table now")]
            assert updates.count("routing table now 1 peer") == 1, updates  # the bootstrap peer, once
            assert all(a != b for a, b in pairwise(updates)), updates  # each change once
            assert not any("1 peers" in line for line in screen_lines(app))
            traffic = await wait_until(pilot, lambda: next((ln for ln in screen_lines(app)
                                                            if re.search(r"Traffic\s+in [1-9]", ln)), None),
                                       what="traffic counted")
            assert re.search(r"in [\d.]+ (B|KiB|MiB) · out [\d.]+ (B|KiB|MiB)", traffic), traffic
            await pilot.resize_terminal(120, 40)
            await wait_until(pilot, lambda: len(id_line().split()[2]) > len(shown), timeout=10,
                             what="more of the peer id at 120 columns")
            wide = id_line().split()[2]
            assert me.startswith(wide.partition("…")[0]) and me.endswith(wide.partition("…")[2])
            await pilot.press("q")

    run(scenario())


def test_message_lines_fit_80_columns(network: Network, tmp_path: Path) -> None:
    """A dialer's numbered messages: each Messages line shows the whole text at 80 columns
    ("Hello from dialer! Message #2", not "… Message #")."""

    async def scenario() -> None:
        app = make_app(tmp_path, "listener", [network.server.addr], namespace="tui-fit-msg")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: any("announced namespace" in t for t in overview_texts(app)),
                             what="announced")
            dialer = network.start("dialer", "--bootstrap", network.server.addr, "--namespace", "tui-fit-msg",
                                   "--count", "2", "--interval", "0.3", "--timeout", "40")
            try:
                log = app.messages_tab.log_view
                await wait_until(pilot, lambda: sum("Message #" in t for t in log.visible_texts()) >= 2,
                                 what="two messages received")
            finally:
                dialer.stop()
            await pilot.press("4")
            lines = await wait_until(pilot, lambda: (lambda ls: ls if any(
                "Hello from dialer! Message #2" in ln for ln in ls) else None)(screen_lines(app)),
                timeout=10, what="the whole message text on screen")
            recv = [ln for ln in lines if "← RECV" in ln]
            assert len(recv) >= 2 and all(ln.rstrip().endswith(("Message #1", "Message #2")) for ln in recv), recv
            assert max(len(ln) for ln in lines) <= 80
            await pilot.press("q")

    run(scenario())


def test_transfers_table_uses_the_width(tmp_path: Path) -> None:
    """The Transfers table fills 120 columns (a long name shows whole) and goes back to
    fit 80; sizes in binary units."""
    env = {"PUNCH_DATA_DIR": str(tmp_path / "data"), "PUNCH_CONFIG": str(tmp_path / "config.toml")}
    share = tmp_path / "share"
    share.mkdir()
    name = "a-rather-long-file-name-for-wide.bin"
    (share / name).write_bytes(os.urandom(5_000_000))
    children: list[Child] = []
    try:
        server = Child("server", cwd=tmp_path, env=env)
        children.append(server)
        seeder = Child("torrent-server", "--share-dir", str(share), "--bootstrap", server.addr, cwd=tmp_path,
                       env=env)
        children.append(seeder)
        info_hash = str(seeder.wait("shared")["info_hash"])
        seeder.wait("announced")

        async def scenario() -> None:
            (tmp_path / "downloads").mkdir()
            app = make_app(tmp_path, "torrent-client", [server.addr], download_dir=tmp_path / "downloads",
                           torrent_interactive=True, timeout=30.0)
            async with app.run_test(size=(80, 24)) as pilot:
                tab = app.tab("transfers")
                await wait_until(pilot, lambda: tab.running, what="the torrent manager answering")
                await pilot.press("5")
                app.download(info_hash, name)
                table = tab.table
                await wait_until(pilot, lambda: [t.strip() for t in table.column_texts("state")] == ["seeding"],
                                 timeout=60, what="the download done")
                assert table.column_texts("size")[0].strip() == "4.8 MiB"  # as the CLI says it

                def table_width() -> int:
                    return sum(c.get_render_width(table) for c in table.ordered_columns)

                assert table_width() <= 80 and table.column_texts("name")[0].endswith("…")
                await pilot.resize_terminal(120, 40)
                await wait_until(pilot, lambda: table.column_texts("name")[0].strip() == f"↑ {name}", timeout=10,
                                 what="the whole name at 120 columns")
                await pilot.pause(0.3)
                assert 110 <= table_width() <= 120, table_width()
                assert name in "".join(screen_lines(app))
                await pilot.resize_terminal(80, 24)
                await wait_until(pilot, lambda: table_width() <= 80, timeout=10, what="back to 80 columns")
                assert table.row_count == 1 and table.column_texts("name")[0].endswith("…")
                await pilot.press("q")

        run(scenario())
    finally:
        for child in reversed(children):
            child.stop()


def test_theme_saved_to_the_punch_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$PUNCH_CONFIG names a file: `t` switches theme and saves it there, atomically (no
    cfg.toml/config.toml folder, no temp file left)."""
    from punch_net.config import NodeConfig, default_config_path
    from punch_tui.app import PunchApp
    from punch_tui.themes import load_themes

    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[node]\nnamespace = "kept"\n')
    monkeypatch.setenv("PUNCH_CONFIG", str(cfg))

    async def scenario() -> None:
        themes, _ = load_themes()
        config = NodeConfig(role="listener", listen_addr="127.0.0.1", port=free_port(), bootstrap=[],
                            ephemeral=True, data_dir=tmp_path / "data")
        app = PunchApp(config, theme_name="punch-dark", themes=themes, config_path=default_config_path())
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.bridge.running, what="node running")
            await pilot.press("t")
            await wait_until(pilot, lambda: app.theme != "punch-dark", timeout=10, what="the theme switched")
            theme = app.theme
            await wait_until(pilot, lambda: "[tui]" in cfg.read_text(), timeout=10, what="the theme saved")
            await pilot.press("q")
        assert cfg.is_file()
        assert tomllib.loads(cfg.read_text()) == {"node": {"namespace": "kept"}, "tui": {"theme": theme}}
        assert [p.name for p in tmp_path.iterdir() if p.name != "data"] == ["cfg.toml"]

    run(scenario())
