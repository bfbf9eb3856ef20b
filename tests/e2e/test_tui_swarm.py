"""The Transfers tab's details against real child processes: two (slow) torrent servers
share one file, the console's torrent client fetches it from both, and then a headless
`punch torrent-client` fetches it from the console. The details show the pieces map
coloured by which server sent each piece, what each peer has, and each peer's rates both
ways (TransferInfo.peers / piece_sources)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from tui_net import Child, make_app, screen_text, wait_until

from punch_tui.screens.torrent import CatalogueScreen, TransferDetailsScreen
from punch_tui.widgets.table import FilterTable
from punch_tui.widgets.transfers import PiecesMap, peer_style

pytestmark = pytest.mark.slow
SIZE = (130, 40)
FILE_SIZE = 12 * 1024 * 1024  # 192 pieces at ~3 MB/s from each server: a few seconds to look
SLOW = (sys.executable, str(Path(__file__).resolve().parents[1] / "support" / "torrent_test_peers.py"), "slow")


def test_details_show_the_swarm_both_ways(tmp_path: Path) -> None:
    env = {"PUNCH_DATA_DIR": str(tmp_path / "data"), "PUNCH_CONFIG": str(tmp_path / "config.toml")}
    share = tmp_path / "share"
    share.mkdir()
    data = os.urandom(FILE_SIZE)
    (share / "swarm.bin").write_bytes(data)
    children: list[Child] = []

    def start(role: str, *args: str, launcher: tuple[str, ...] = ()) -> Child:
        child = Child(role, *args, cwd=tmp_path, env=env, launcher=launcher)
        children.append(child)
        return child

    try:
        boot = start("server")
        servers = [start("torrent-server", "--share-dir", str(share), "--bootstrap", boot.addr, launcher=SLOW)
                   for _ in range(2)]
        info_hash = str(servers[0].wait("shared")["info_hash"])
        for s in servers:
            s.wait("announced")
            s.wait("registered")
        asyncio.run(_scenario(tmp_path, boot, servers, info_hash, data, start))
    finally:
        for child in reversed(children):
            child.stop()


async def _scenario(tmp: Path, boot: Child, servers: list[Child], info_hash: str, data: bytes,
                    start: Any) -> None:
    download = tmp / "downloads"
    download.mkdir()
    app = make_app(tmp, "torrent-client", [boot.addr], download_dir=download, torrent_interactive=True,
                   timeout=30.0)
    async with app.run_test(size=SIZE) as pilot:
        tab = app.tab("transfers")
        await wait_until(pilot, lambda: tab.running, what="the torrent manager answering")
        await pilot.press("5")
        await wait_until(pilot, lambda: app.focused is tab.table, timeout=20, what="the transfers table focused")
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, CatalogueScreen), what="catalogue screen")
        catalogue = app.screen
        await wait_until(pilot, lambda: info_hash in catalogue.entries and catalogue.entries[info_hash].providers == 2,
                         what="the file listed by both servers")
        await pilot.press("enter")
        await wait_until(pilot, lambda: info_hash in tab.infos, what="the download started")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, TransferDetailsScreen), what="details screen")
        details = app.screen
        swarm = details.query_one("#td-swarm", FilterTable)
        server_ids = [s.peer_id for s in servers]

        def both_sending() -> bool:
            now = tab.infos.get(info_hash)
            got = {p.peer_id: p for p in now.peers} if now is not None else {}
            return all(sid in got and got[sid].down_rate > 0 and got[sid].have == now.total  # type: ignore[union-attr]
                       for sid in server_ids)

        # While downloading: each server's row shows what it has (all of it) and its rate to us.
        await wait_until(pilot, both_sending, timeout=60, what="both servers sending, with all pieces")
        n = tab.infos[info_hash].total
        await wait_until(pilot, lambda: sum(t.strip() == f"{n}/{n}" for t in swarm.column_texts("pieces")) >= 2,
                         what="the swarm table showing both servers' pieces")
        downs = [t.strip() for t, peer in zip(swarm.column_texts("down"), swarm.column_texts("peer"), strict=True)
                 if any(sid[-12:] in peer for sid in server_ids)]
        assert len(downs) == 2 and all(d != "0 B/s" for d in downs), downs

        await wait_until(pilot, lambda: (lambda i: i is not None and i.state == "seeding")(tab.infos.get(info_hash)),
                         timeout=90, what="the download complete and seeding")
        assert hashlib.sha256((download / "swarm.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
        info = tab.infos[info_hash]
        rows = {p.peer_id: i for i, p in enumerate(info.peers)}
        assert set(server_ids) <= set(rows), (server_ids, info.peers)
        # The pieces map: every piece coloured by the server that sent it, both colours present.
        sent_by = {s for s in info.piece_sources if s >= 0}
        assert sent_by == {rows[sid] for sid in server_ids}, info.piece_sources
        await pilot.pause(1.5)  # the details redraw from the next snapshot
        rendered = details.query_one(PiecesMap).render()
        map_styles = {str(span.style).removeprefix("ansi_") for span in rendered.spans}  # type: ignore[union-attr]
        assert {peer_style(rows[sid] + 1) for sid in server_ids} <= map_styles, map_styles

        # A headless client fetches the file from the console alone: its row shows our upload.
        for s in servers:
            s.stop()
        fetch = tmp / "fetched"
        fetch.mkdir()
        client = start("torrent-client", "--bootstrap", boot.addr, "--info-hash", info_hash, "--download-dir",
                       str(fetch), "--no-seed", "--timeout", "60")
        client_id = client.peer_id

        def uploading() -> bool:
            now = tab.infos.get(info_hash)
            return now is not None and any(p.peer_id == client_id and p.up_rate > 0 for p in now.peers)

        await wait_until(pilot, uploading, timeout=90, what="the console's upload to the headless client")
        await wait_until(pilot, lambda: any(client_id[-12:] in t for t in swarm.column_texts("peer")),
                         what="the client's row in the swarm table")
        up = swarm.column_texts("up")[[client_id[-12:] in t for t in swarm.column_texts("peer")].index(True)]
        assert up.strip() not in ("0 B/s", ""), up
        text = screen_text(app)
        assert "↑ Rate" in text and "Has" in text and "Swarm" in text, text
        client.wait("complete", timeout=90)
        await pilot.press("escape")
        await pilot.press("q")
