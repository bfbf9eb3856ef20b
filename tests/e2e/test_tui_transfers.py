"""The Transfers tab of `punch-tui --role torrent-client` against real child processes: a
`punch server` (bootstrap) and a `punch torrent-server` sharing a file of random bytes.

The console's own node runs the torrent client in trio guest mode, exactly as in
production; every action goes through keys, the catalogue screen and the palette."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tui_net import Child, make_app, open_palette, screen_text, wait_until

from punch_net.torrent.info import TransferInfo
from punch_tui.peers import InputError, check_info_hash
from punch_tui.screens.prompt import PromptScreen
from punch_tui.screens.torrent import CatalogueScreen, ConfirmScreen, TransferDetailsScreen
from punch_tui.tabs.transfers import column_widths, progress_bar, transfer_row
from punch_tui.widgets.plots import RatePlot
from punch_tui.widgets.table import FilterTable

SIZE = (100, 30)
FILE_SIZE = 3 * 65536 + 1234  # four pieces, the last one short


class TorrentNet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        env = {"PUNCH_DATA_DIR": str(tmp / "data"), "PUNCH_CONFIG": str(tmp / "config.toml")}
        share = tmp / "share"
        share.mkdir()
        self.data = os.urandom(FILE_SIZE)
        (share / "random.bin").write_bytes(self.data)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.children: list[Child] = []
        try:
            self.server = Child("server", cwd=tmp, env=env)
            self.children.append(self.server)
            self.torrent = Child("torrent-server", "--share-dir", str(share), "--bootstrap", self.server.addr,
                                 cwd=tmp, env=env)
            self.children.append(self.torrent)
            self.info_hash = str(self.torrent.wait("shared")["info_hash"])
            self.torrent.wait("announced")
            self.torrent.wait("registered")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()


@pytest.fixture(scope="module")
def tnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorrentNet]:
    net = TorrentNet(tmp_path_factory.mktemp("tui-torrent"))
    try:
        yield net
    finally:
        net.close()


def state(tab: Any, info_hash: str) -> str | None:
    info = tab.infos.get(info_hash)
    return info.state if info is not None else None


def texts(table: FilterTable, column: str) -> list[str]:
    return [t.strip() for t in table.column_texts(column)]


def client_app(tmp: Path, net: TorrentNet) -> Any:
    download = tmp / "downloads"
    download.mkdir(exist_ok=True)
    return make_app(tmp, "torrent-client", [net.server.addr], download_dir=download, torrent_interactive=True,
                    timeout=30.0)


def test_catalogue_fetch_completes_and_details(tnet: TorrentNet, tmp_path: Path) -> None:
    """d lists the shared file; enter fetches it; the row reaches seeding at 100 % and the
    file on disk has the right SHA-256; enter on the row shows the pieces map and the peer."""

    async def scenario() -> None:
        app = client_app(tmp_path, tnet)
        async with app.run_test(size=SIZE) as pilot:
            tab = app.tab("transfers")
            await wait_until(pilot, lambda: tab.running, what="the torrent manager answering")
            await pilot.press("5")
            await wait_until(pilot, lambda: app.focused is tab.table, timeout=20, what="the transfers table focused")
            await pilot.press("d")
            await wait_until(pilot, lambda: isinstance(app.screen, CatalogueScreen), what="catalogue screen")
            screen = app.screen
            await wait_until(pilot, lambda: tnet.info_hash in screen.entries, what="the shared file listed")
            table = screen.query_one("#cat-table", FilterTable)
            assert table.column_texts("name") == ["random.bin"]
            assert table.column_texts("info_hash") == [tnet.info_hash]
            assert table.column_texts("providers") == ["1"]
            await pilot.press("enter")
            await wait_until(pilot, lambda: not isinstance(app.screen, CatalogueScreen), what="catalogue closed")
            await wait_until(pilot, lambda: state(tab, tnet.info_hash) in ("seeding", "complete"),
                             what="download complete")
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["seeding"], what="row shows seeding")
            assert texts(tab.table, "progress")[0].endswith("100%")
            assert texts(tab.table, "name") == ["↑ random.bin"]
            got = (tmp_path / "downloads" / "random.bin").read_bytes()
            assert hashlib.sha256(got).hexdigest() == tnet.sha256
            assert not (tmp_path / "downloads" / "random.bin.part").exists()
            await pilot.press("p")  # stop seeding it, then serve it again
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["paused"], what="seeding paused")
            await pilot.press("p")
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["seeding"], what="seeding again")
            # details: pieces map (4 pieces, all from peer 1) and the per-peer table
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, TransferDetailsScreen), what="details screen")
            text = await wait_until(pilot, lambda: (lambda t: t if "4/4 pieces" in t else "")(screen_text(app)),
                                    timeout=20, what="the details drawn")
            assert "████" in text and "4/4 pieces" in text
            peers = app.screen.query_one("#td-peers", FilterTable)
            assert any(tnet.torrent.peer_id[-12:] in p for p in peers.column_texts("peer"))
            # the rate plots: the transfer's rates from every snapshot since it was listed
            await wait_until(pilot, lambda: len(app.history.transfer(tnet.info_hash)[0].points) >= 2,
                             what="the transfer's rate sampled by two snapshots")
            assert app.screen.query_one("#det-down", RatePlot).view is not None and "download" in screen_text(app)
            await pilot.press("escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, TransferDetailsScreen), what="details closed")
            await pilot.press("q")

    asyncio.run(scenario())


def test_bad_info_hash_pause_resume_cancel(tnet: TorrentNet, tmp_path: Path) -> None:
    """A bad info hash gives an inline error (palette and prompt); a valid unknown one is
    added and sits in 'finding'; p pauses and resumes it; c asks, then cancels."""
    unknown = "ab" * 32

    async def scenario() -> None:
        app = client_app(tmp_path, tnet)
        async with app.run_test(size=SIZE) as pilot:
            tab = app.tab("transfers")
            await wait_until(pilot, lambda: tab.running, what="the torrent manager answering")
            await open_palette(pilot, app)
            await pilot.press(*"download 12zz")
            await wait_until(pilot, lambda: "✗ an info hash is 64 hex digits, this is 4 characters" in screen_text(app),
                             timeout=10, what="inline error in the palette")
            await pilot.press("escape")
            app.open_prompt("download")
            await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), what="download prompt")
            await pilot.press(*("g" * 64), "enter")
            await wait_until(pilot, lambda: "✗ an info hash is hexadecimal; 'g' is not a hex digit" in screen_text(app),
                             timeout=20, what="the inline error in the prompt")
            assert isinstance(app.screen, PromptScreen)  # not accepted
            await pilot.press(*(["backspace"] * 64), *unknown, "enter")
            await wait_until(pilot, lambda: not isinstance(app.screen, PromptScreen), what="prompt accepted")
            await wait_until(pilot, lambda: state(tab, unknown) == "finding",
                             what="the unknown hash is looking for providers")
            assert app.query_one("#tabs").active == "transfers"
            tab.table.focus()
            await pilot.press("p")
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["paused"], what="paused")
            await pilot.press("p")
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["finding"], what="resumed")
            await pilot.press("c")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
            await pilot.press("n")
            await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="confirmation answered")
            for _ in range(2):  # two fresh fetches of the transfers after "no": the second began after it
                seen = tab.infos
                await wait_until(pilot, lambda: tab.infos is not seen, what="the transfers fetched again")  # noqa: B023
            assert tab.infos[unknown].state == "finding"
            await pilot.press("c")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
            await pilot.press("y")
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["cancelled"], what="cancelled")
            await pilot.press("q")

    asyncio.run(scenario())


def test_server_role_pause_resume_verify(tnet: TorrentNet, tmp_path: Path) -> None:
    """`--role torrent-server`: each shared file is a seeding row; p stops and restarts
    serving it (paused / seeding), v re-hashes it."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "one.bin").write_bytes(os.urandom(70_000))

    async def scenario() -> None:
        app = make_app(tmp_path, "torrent-server", [tnet.server.addr], share_dir=share)
        async with app.run_test(size=SIZE) as pilot:
            tab = app.tab("transfers")
            await pilot.press("5")
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["seeding"], what="the shared file's row")
            assert texts(tab.table, "name") == ["↑ one.bin"]
            tab.table.focus()
            await pilot.press("p")
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["paused"], what="paused")
            await pilot.press("p")
            await wait_until(pilot, lambda: texts(tab.table, "state") == ["seeding"], what="serving again")
            await pilot.press("v")
            await wait_until(pilot, lambda: any("every piece is good" in n.message for n in app._notifications),
                             what="the verify result notification")
            await pilot.press("q")

    asyncio.run(scenario())


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(("text", "error"), [
    ("", "type an info hash"), ("ab" * 31, "this is 62 characters"), ("ab" * 33, "this is 66 characters"),
    ("ab" * 31 + "zz", "'z' is not a hex digit"), ("/" * 64, "'/' is not a hex digit"),
])
def test_check_info_hash_rejects(text: str, error: str) -> None:
    with pytest.raises(InputError, match=error):
        check_info_hash(text)


def test_check_info_hash_accepts_and_normalises() -> None:
    assert check_info_hash("  " + "AB" * 32 + " ") == "ab" * 32


def test_progress_bar_and_row() -> None:
    assert progress_bar(0.0) == "······   0%"
    assert progress_bar(1.0) == "██████ 100%"
    assert progress_bar(0.5) == "███···  50%"
    assert progress_bar(0.999).endswith(" 99%")  # 100 % only when done
    assert len({len(progress_bar(i / 97)) for i in range(98)}) == 1  # fixed width
    info = TransferInfo(info_hash="ab" * 32, name="a-rather-long-file-name.iso", size=2_000_000, have=10, total=31,
                        bytes_per_s=1_500_000.0, eta_s=75.0, active_peers=3, state="downloading", direction="download",
                        path="", uploaded=0, upload_bytes_per_s=0.0)
    row = [c.text.strip() for c in transfer_row(info)]
    assert row == ["↓ a-rather-lo…", "█▉····  32%", "1.9 MiB", "1.4 MiB/s", "1m15s", "3", "downloading"]
    pending = transfer_row(replace(info, name="", state="finding", total=0, have=0, eta_s=None))
    assert pending[0].text.strip() == "↓ ababababab…"
    assert pending[4].text.strip() == "-"
    seed = transfer_row(replace(info, direction="seed", state="seeding", have=31, upload_bytes_per_s=2e3))
    assert [c.text.strip() for c in seed][3:] == ["2.0 KiB/s", "-", "3", "seeding"]
    # wider terminals: the name and the bar take the room (issue 15: the table stayed 80 wide)
    assert column_widths(80) == (14, 6) and column_widths(60) == (14, 6)
    name_w, bar_w = column_widths(120)
    assert name_w > 14 and 6 < bar_w <= 20
    wide = [c.text for c in transfer_row(info, name_w, bar_w)]
    assert wide[0].strip() == "↓ a-rather-long-file-name.iso" and len(wide[0]) == name_w
    assert len(wide[1]) == bar_w + len(" 100%")
