"""punch_tui/widgets/transfers.py: the pieces map and the transfer details panel."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.app import App, ComposeResult
from textual.widgets import Static

from punch_net.torrent.info import TransferInfo, TransferPeer
from punch_tui.widgets.table import FilterTable
from punch_tui.widgets.transfers import (
    DISK_STYLE,
    EMPTY,
    FULL,
    MISSING_STYLE,
    PiecesMap,
    TransferDetails,
    peer_style,
    pieces_map_text,
)


def styles(text: Any) -> list[tuple[str, str]]:
    return [(text.plain[s.start:s.end], str(s.style)) for s in text.spans]


def test_one_cell_per_piece_coloured_by_source() -> None:
    text = pieces_map_text([-1, 0, 1, 2, 1], width=10)
    assert text.plain == EMPTY + FULL * 4
    assert [st for _, st in styles(text)] == [MISSING_STYLE, DISK_STYLE, peer_style(1), peer_style(2), peer_style(1)]
    assert peer_style(1) != peer_style(2)


def test_wraps_and_downsamples_large_transfers() -> None:
    pieces = [1] * 1000 + [-1] * 24
    text = pieces_map_text(pieces, width=20, max_rows=4)
    rows = text.plain.split("\n")
    assert len(rows) <= 4 and all(len(r) <= 20 for r in rows)
    assert rows[-1].endswith(EMPTY) and rows[0].startswith(FULL)  # a cell with a missing piece shows missing


def test_empty_file_has_no_pieces() -> None:
    assert "empty" in pieces_map_text([], width=10).plain


class _Host(App[None]):
    def compose(self) -> ComposeResult:
        yield TransferDetails(id="details")


def test_details_panel_shows_summary_map_and_peers() -> None:
    info = TransferInfo(
        info_hash="ab" * 32, name="big.bin", size=5 * 65536, have=3, total=5, bytes_per_s=2_000_000.0, eta_s=12.0,
        active_peers=2, state="downloading", direction="download", path="", uploaded=0, upload_bytes_per_s=0.0,
        piece_sources=(0, 1, 0, -1, -1),
        peers=(
            TransferPeer(peer_id="12D3KooWpeerAAAAAAAAAAAA", down_rate=1e6, up_rate=0.0, have=5, choked=False,
                         interested=False, state="active", downloaded=131072, pieces=2, outstanding=4),
            TransferPeer(peer_id="12D3KooWpeerBBBBBBBBBBBB", down_rate=0.0, up_rate=0.0, have=0, choked=False,
                         interested=False, state="bad", downloaded=65536, pieces=1, bad_pieces=1, error="bad piece"),
            # only fetches from us: in the swarm table, not in the per-peer (fetching) table
            TransferPeer(peer_id="12D3KooWleechCCCCCCCCCCCC", down_rate=0.0, up_rate=5e5, have=1, choked=False,
                         interested=True),
        ),
    )

    async def scenario() -> None:
        app = _Host()
        async with app.run_test(size=(100, 30)) as pilot:
            details = app.query_one(TransferDetails)
            details.show(info)
            await pilot.pause()
            summary = str(details.query_one("#td-summary", Static).render())
            assert "big.bin" in summary and "downloading" in summary and "3/5" in summary
            pieces_map = details.query_one(PiecesMap)
            assert str(pieces_map.render()).startswith(FULL * 3 + EMPTY * 2)
            table = details.query_one("#td-peers", FilterTable)
            assert table.total_rows == 2
            assert [t.strip() for t in table.column_texts("state")] == ["active", "bad"]
            assert [t.strip() for t in table.column_texts("bad")] == ["0", "1"]
            assert [t.strip() for t in table.column_texts("outstanding")] == ["4", "0"]
            assert details.query_one("#td-swarm", FilterTable).total_rows == 3

    asyncio.run(scenario())


def test_swarm_table_and_map_from_piece_sources() -> None:
    """TransferInfo.peers / piece_sources: the map colours piece i by peers[piece_sources[i]]
    (peer_style(index + 1)), -2 from disk, -1 missing; the swarm table shows each peer's
    rates both ways, what it has and the choking."""
    from punch_tui.widgets.transfers import has_bar, map_sources, swarm_legend_text, swarm_rows

    peers = (TransferPeer("12D3KooWseederAAAAAAAAAAA", 3e6, 0.0, 4, False, False),
             TransferPeer("12D3KooWleecherBBBBBBBBBB", 1e6, 2e6, 2, True, True))
    info = TransferInfo(
        info_hash="cd" * 32, name="swarm.bin", size=4 * 65536, have=3, total=4, bytes_per_s=4e6, eta_s=1.0,
        active_peers=2, state="downloading", direction="download", path="", uploaded=65536,
        upload_bytes_per_s=2e6, peers=peers, piece_sources=(0, 1, -2, -1))
    assert map_sources(info) == [1, 2, 0, -1]
    text = pieces_map_text(map_sources(info), width=10)
    assert [st for _, st in styles(text)] == [peer_style(1), peer_style(2), DISK_STYLE, MISSING_STYLE]
    assert "AAAAAAAA" in swarm_legend_text(peers).plain and "BBBBBBBB" in swarm_legend_text(peers).plain
    assert has_bar(4, 4) == FULL * 8 + " 100%" and has_bar(2, 4) == FULL * 4 + EMPTY * 4 + "  50%"
    leech = [c.text for c in swarm_rows(peers, 4)[peers[1].peer_id]]
    assert leech[1:3] == ["977 KiB/s", "1.9 MiB/s"] and leech[5:] == ["yes", "yes"], leech

    async def scenario() -> None:
        app = _Host()
        async with app.run_test(size=(120, 30)) as pilot:
            details = app.query_one(TransferDetails)
            details.show(info)
            await pilot.pause()
            swarm = details.query_one("#td-swarm", FilterTable)
            assert swarm.total_rows == 2
            assert [t.strip() for t in swarm.column_texts("choked")] == ["no", "yes"]
            assert [t.strip() for t in swarm.column_texts("pieces")] == ["4/4", "2/4"]
            assert str(details.query_one(PiecesMap).render()).startswith(FULL * 3 + EMPTY)

    asyncio.run(scenario())
