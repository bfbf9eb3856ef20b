"""SVG snapshot tests at 80x24 (and the tabs at 120x40): each tab, the help and error screens and the three
themes, with volatile fields (times, ports, uptime, Rich's per-export id) masked.

The node is real (a listener on 127.0.0.1 with no bootstrap) with a fixed identity, so
its peer id is stable. Run with PUNCH_UPDATE_SNAPSHOTS=1 to rewrite the references after
an intended UI change, then look at the SVGs before committing them."""

from __future__ import annotations

import asyncio
import difflib
import html
import os
import re
import socket
from pathlib import Path

import pytest
from tui_net import free_port, make_app, wait_until

SNAPSHOTS = Path(__file__).parent / "snapshots"
SEED = b"punch-tui-snapshot-seed-32bytes!"
PEER_ID = "12D3KooWRfpyZhXK5exR8uPckhBcXkiYBpbGBKAZHxBTDBvrchSR"

MASKS = [
    (re.compile(r"terminal-\d+"), "terminal-0"),
    (re.compile(r"\d\d:\d\d:\d\d"), "00:00:00"),
    (re.compile(r"/tcp/\d{5}"), "/tcp/00000"),
    (re.compile(r"port \d{5}"), "port 00000"),
    (re.compile(r":\d{5}\b"), ":00000"),
    (re.compile(r"(Uptime(?:&#160;)*</text>\s*<text[^>]*>)\d+[smhd]"), r"\g<1>0s"),
]


def mask(svg: str) -> str:
    for pattern, repl in MASKS:
        svg = pattern.sub(repl, svg)
    return svg


def svg_lines(svg: str) -> list[str]:
    """The text of each screen line, for a readable diff when a snapshot differs."""
    lines: dict[str, list[str]] = {}
    for y, text in re.findall(r'<text[^>]*y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        lines.setdefault(y, []).append(html.unescape(text).replace("\xa0", " "))
    return ["".join(parts) for _, parts in sorted(lines.items(), key=lambda kv: float(kv[0]))]


def check(name: str, svg: str) -> None:
    got = mask(svg)
    ref = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("PUNCH_UPDATE_SNAPSHOTS") or not ref.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        ref.write_text(got)
        if not os.environ.get("PUNCH_UPDATE_SNAPSHOTS"):
            pytest.fail(f"new snapshot {ref.name} written; check it and run again")
        return
    want = ref.read_text()
    if got != want:
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"punch-tui-{name}.actual.svg"
        out.write_text(got)
        diff = "\n".join(difflib.unified_diff(svg_lines(want), svg_lines(got), "expected", "actual", lineterm=""))
        pytest.fail(f"snapshot {name} differs (actual saved to {out}); screen text diff:\n{diff or '(styles only)'}")


def key_pair():  # type: ignore[no-untyped-def]
    from libp2p.crypto.ed25519 import create_new_key_pair

    return create_new_key_pair(SEED)


async def _settle(app, pilot) -> None:  # type: ignore[no-untyped-def]
    await wait_until(pilot, lambda: app.last_snapshot is not None and app.bridge.running, timeout=30,
                     what="first snapshot")
    await pilot.pause(0.6)  # two more polls: every widget has drawn real data


def test_snapshots_tabs_and_help(tmp_path: Path) -> None:
    async def scenario() -> None:
        app = make_app(tmp_path, "listener", port=free_port(), key_pair=key_pair(), poll=0.25)
        async with app.run_test(size=(80, 24)) as pilot:
            await _settle(app, pilot)
            assert app.peers.me == PEER_ID
            check("overview", app.export_screenshot())
            for key, name in (("2", "dht"), ("3", "connections"), ("4", "messages"), ("5", "transfers"),
                              ("6", "relay")):
                await pilot.press(key)
                await pilot.pause(0.4)
                check(name, app.export_screenshot())
            await pilot.press("question_mark")
            await pilot.pause(0.3)
            check("help", app.export_screenshot())
            await pilot.press("escape", "q")

    asyncio.run(scenario())


def test_snapshots_tabs_at_120x40(tmp_path: Path) -> None:
    """The tabs at 120x40: the room is used (peer id, tables), nothing drawn for 80 only."""

    async def scenario() -> None:
        app = make_app(tmp_path, "listener", port=free_port(), key_pair=key_pair(), poll=0.25)
        async with app.run_test(size=(120, 40)) as pilot:
            await _settle(app, pilot)
            assert app.peers.me == PEER_ID
            check("overview-120x40", app.export_screenshot())
            for key, name in (("2", "dht"), ("3", "connections"), ("4", "messages"), ("5", "transfers"),
                              ("6", "relay")):
                await pilot.press(key)
                await pilot.pause(0.4)
                check(f"{name}-120x40", app.export_screenshot())
            await pilot.press("q")

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_snapshot_transfers_table(tmp_path: Path, size: tuple[int, int]) -> None:
    """A torrent client's Transfers table with one transfer still finding its peers (an
    info hash nobody has: nothing in it moves), at 80x24 and at 120x40 where it widens."""

    async def scenario() -> None:
        (tmp_path / "downloads").mkdir()
        app = make_app(tmp_path, "torrent-client", port=free_port(), key_pair=key_pair(), poll=0.25,
                       download_dir=tmp_path / "downloads", torrent_interactive=True, timeout=600.0)
        async with app.run_test(size=size) as pilot:
            await _settle(app, pilot)
            await pilot.press("5")
            app.download("ab" * 32)
            tab = app.tab("transfers")
            await wait_until(pilot, lambda: tab.table.row_count == 1, timeout=30, what="the transfer's row")
            await pilot.pause(0.6)
            check(f"transfers-rows-{size[0]}x{size[1]}", app.export_screenshot())
            await pilot.press("q")

    asyncio.run(scenario())


@pytest.mark.parametrize("theme", ["punch-light", "punch-high-contrast"])
def test_snapshots_themes(tmp_path: Path, theme: str) -> None:
    async def scenario() -> None:
        app = make_app(tmp_path, "listener", port=free_port(), key_pair=key_pair(), theme=theme, poll=0.25)
        async with app.run_test(size=(80, 24)) as pilot:
            await _settle(app, pilot)
            assert app.theme == theme
            check(f"overview-{theme}", app.export_screenshot())
            await pilot.press("q")

    asyncio.run(scenario())


def test_snapshot_error_screen(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen(1)
        port = busy.getsockname()[1]

        async def scenario() -> None:
            app = make_app(tmp_path, "listener", port=port, key_pair=key_pair())
            async with app.run_test(size=(80, 24)) as pilot:
                await wait_until(pilot, lambda: app.bridge.finished, timeout=20, what="node failure")
                await pilot.pause(0.4)
                check("error", app.export_screenshot())
                await pilot.press("q")

        asyncio.run(scenario())
