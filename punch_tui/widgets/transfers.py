"""Torrent transfer widgets: a pieces map coloured by the peer each piece came from, a
per-peer rate table, the swarm table (each peer's rates both ways, what it has, choking),
and a details panel combining them.

They take `TransferInfo` / `TransferPeer` (punch_net/torrent/info.py: pure
data, the same in-process and attached), so the UI never imports the network stack.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from punch_net.torrent.info import TransferInfo, TransferPeer
from punch_tui.format import plural, size
from punch_tui.format import rate as format_rate
from punch_tui.widgets.table import Cell, FilterTable, cell

# Peer k (1-based: TransferInfo.peers[k - 1]) gets PALETTE[(k - 1) % len]; missing and
# from-disk pieces are neutral.
PALETTE = ("green", "cyan", "magenta", "yellow", "blue", "bright_red", "bright_green", "bright_cyan",
           "bright_magenta", "orange3", "purple", "spring_green3")
MISSING_STYLE = "grey30"
DISK_STYLE = "grey62"
FULL, EMPTY = "█", "·"


def peer_style(number: int) -> str:
    if number < 0:
        return MISSING_STYLE
    if number == 0:
        return DISK_STYLE
    return PALETTE[(number - 1) % len(PALETTE)]


def _bucket_source(sources: Sequence[int]) -> int:
    """One cell stands for several pieces: missing if any is missing, else the most common source."""
    if not sources or any(s < 0 for s in sources):
        return -1
    return Counter(sources).most_common(1)[0][0]


def pieces_map_text(sources: Sequence[int], width: int, max_rows: int = 8) -> Text:
    """The pieces map as rich Text (`sources` per piece in `peer_style` numbering, see
    `map_sources`): up to width x max_rows cells; a cell covers ceil(pieces / cells)
    pieces when there are more pieces than cells."""
    n = len(sources)
    out = Text(no_wrap=True)
    if n == 0:
        out.append("(no pieces: empty file)", style="dim")
        return out
    width = max(1, width)
    cells = min(n, width * max(1, max_rows))
    per = -(-n // cells)
    cells = -(-n // per)
    for i in range(cells):
        src = _bucket_source(sources[i * per:(i + 1) * per])
        out.append(EMPTY if src < 0 else FULL, style=peer_style(src))
        if (i + 1) % width == 0 and i + 1 < cells:
            out.append("\n")
    return out


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def summary_line(info: TransferInfo) -> Text:
    total, have = info.total, info.have
    pct = 100.0 * have / total if total else (100.0 if info.state in ("seeding", "complete") else 0.0)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(info.name or info.info_hash[:16], style="bold")
    text.append(f"  {info.state}  {pct:5.1f}%  {have}/{total} pieces  {size(info.size)}  ")
    text.append(f"↓ {format_rate(info.bytes_per_s)}  ETA {_eta(info.eta_s)}  {plural(info.active_peers, 'peer')}")
    if info.error:
        text.append(f"  {info.error}", style="red")
    return text


def map_sources(info: TransferInfo) -> list[int]:
    """The pieces map's per-piece source in `peer_style` numbering (k >= 1 peer k, 0 from
    disk, -1 missing), from `piece_sources` (index into `peers`, -2 disk, -1 missing)."""
    return [s + 1 if s >= 0 else (0 if s == -2 else -1) for s in info.piece_sources]


def swarm_legend_text(peers: Sequence[TransferPeer]) -> Text:
    """The legend for a map drawn from `piece_sources`: peer i has colour peer_style(i + 1)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(FULL, style=DISK_STYLE)
    text.append(" on disk  ")
    text.append(EMPTY, style=MISSING_STYLE)
    text.append(" missing  ")
    for i, p in enumerate(peers):
        text.append(FULL, style=peer_style(i + 1))
        text.append(f" {p.peer_id[-8:]}  ")
    return text


def has_bar(have: int, total: int, width: int = 8) -> str:
    """What a peer has: a small bar and its share of the pieces ("████····  50%")."""
    frac = have / total if total else 0.0
    full = min(width, int(frac * width + 1e-9))
    pct = int(frac * 100) if have < total else 100
    return f"{FULL * full}{EMPTY * (width - full)} {pct:3d}%"


SWARM_COLUMNS = [("peer", "Peer"), ("down", "↓ Rate"), ("up", "↑ Rate"), ("has", "Has"), ("pieces", "Pieces"),
                 ("choked", "We choke"), ("interested", "Wants ours")]


def swarm_rows(peers: Sequence[TransferPeer], total: int) -> dict[str, list[Cell]]:
    """One row per peer we exchange pieces with, either way (`TransferInfo.peers`)."""
    rows: dict[str, list[Cell]] = {}
    for i, p in enumerate(peers):
        pid = p.peer_id
        rows[pid] = [
            cell(f"█ …{pid[-12:]}", pid, peer_style(i + 1)),
            cell(format_rate(p.down_rate), p.down_rate),
            cell(format_rate(p.up_rate), p.up_rate),
            cell(has_bar(p.have, total), p.have, "green" if total and p.have >= total else ""),
            cell(f"{p.have}/{total}", p.have),
            cell("yes" if p.choked else "no", int(p.choked), "yellow" if p.choked else ""),
            cell("yes" if p.interested else "no", int(p.interested)),
        ]
    return rows


PEER_COLUMNS = [("peer", "Peer"), ("state", "State"), ("rate", "Rate"), ("pieces", "Pieces"),
                ("bad", "Bad"), ("outstanding", "Asked")]


def peer_rows(peers: Sequence[TransferPeer]) -> dict[str, list[Cell]]:
    """One row per peer we fetch from (those with a `state`): how fetching from it goes."""
    rows: dict[str, list[Cell]] = {}
    for i, p in enumerate(peers):
        pid, state = p.peer_id, p.state
        if not state:
            continue
        rows[pid] = [
            cell(f"█ …{pid[-12:]}", pid, peer_style(i + 1)),
            cell(state, state, "red" if state == "bad" else ""),
            cell(format_rate(p.down_rate), p.down_rate),
            cell(p.pieces, p.pieces),
            cell(p.bad_pieces, p.bad_pieces, "red" if p.bad_pieces else ""),
            cell(p.outstanding, p.outstanding),
        ]
    return rows


class PiecesMap(Static):
    """Every piece of one transfer, coloured by the peer it came from."""

    DEFAULT_CSS = "PiecesMap { height: auto; max-height: 10; }"

    def __init__(self, max_rows: int = 8, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.max_rows = max_rows
        self._pieces: list[int] = []

    def show(self, sources: Sequence[int]) -> None:
        self._pieces = list(sources)
        self._render_map()

    def on_resize(self) -> None:
        self._render_map()

    def _render_map(self) -> None:
        width = max(10, self.size.width or 60)
        self.update(pieces_map_text(self._pieces, width, self.max_rows))


class TransferDetails(Vertical):
    """Details of one transfer: summary, pieces map with its legend, per-peer rates."""

    DEFAULT_CSS = """
    TransferDetails { height: auto; }
    TransferDetails #td-summary, TransferDetails #td-legend, TransferDetails #td-swarm-title { height: 1; }
    TransferDetails #td-swarm-title { color: $foreground-muted; }
    TransferDetails FilterTable { height: auto; max-height: 12; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="td-summary")
        yield PiecesMap(id="td-map")
        yield Static("", id="td-legend")
        yield FilterTable(PEER_COLUMNS, id="td-peers")
        yield Static("Swarm: every peer, both ways", id="td-swarm-title")
        yield FilterTable(SWARM_COLUMNS, id="td-swarm")

    def show(self, info: TransferInfo) -> None:
        self.query_one("#td-summary", Static).update(summary_line(info))
        self.query_one("#td-map", PiecesMap).show(map_sources(info))
        self.query_one("#td-legend", Static).update(swarm_legend_text(info.peers))
        self.query_one("#td-peers", FilterTable).set_rows(peer_rows(info.peers))
        self.query_one("#td-swarm", FilterTable).set_rows(swarm_rows(info.peers, info.total))
