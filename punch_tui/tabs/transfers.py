"""Transfers: the torrent roles' downloads and shared files.

Each node snapshot carries `snap.transfers` (`TransferInfo` rows; None when the role runs
no torrent manager), one row per transfer: progress bar, size, rates, ETA, peers, state.
Keys: p pause/resume, c cancel (confirmed), v verify, enter details (pieces map and
per-peer rates, live), d the catalogue of files that servers offer. Commands are NodeAPI
calls (`api.torrent_pause(hash)`, …) through the bridge, the same in both modes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from punch_net.api import NodeAPI, Snapshot
from punch_net.torrent.info import CatalogueEntry, TransferInfo
from punch_tui.console import console
from punch_tui.format import age, plural, rate, size
from punch_tui.peers import check_info_hash
from punch_tui.screens.prompt import PromptScreen
from punch_tui.screens.torrent import CatalogueScreen, ConfirmScreen, TransferDetailsScreen
from punch_tui.tabs.base import NodeTab
from punch_tui.widgets.table import Cell, FilterTable, cell

T = TypeVar("T")

NOT_RUNNING = "Transfers are not running in this role (start a torrent role to see them)."
NO_MANAGER = "the torrent manager is not running on this node"
COLUMNS = [("name", "Name"), ("progress", "Progress"), ("size", "Size"), ("rate", "Rate"), ("eta", "ETA"),
           ("peers", "Peers"), ("state", "State")]
# Cell texts are padded to these widths: the table's columns then fit 80 columns from the
# first row on (a DataTable column does not grow when a cell is updated in place).
NAME_WIDTH, SIZE_WIDTH, RATE_WIDTH, ETA_WIDTH, STATE_WIDTH = 14, 8, 10, 5, 11
STATE_STYLE = {"downloading": "green", "seeding": "cyan", "complete": "green", "paused": "yellow",
               "error": "bold red", "cancelled": "dim", "verifying": "magenta", "finding": ""}
BAR_WIDTH = 6
MAX_BAR_WIDTH = 20
# The table at the widths above (each column has one cell of padding on either side), and
# room for a vertical scrollbar: what fits 80 columns. Wider terminals widen name and bar.
BASE_TABLE_WIDTH = (NAME_WIDTH + BAR_WIDTH + len(" 100%") + SIZE_WIDTH + RATE_WIDTH + ETA_WIDTH + len("Peers")
                    + STATE_WIDTH + 2 * len(COLUMNS))
SCROLLBAR_WIDTH = 2
_EIGHTHS = " ▏▎▍▌▋▊▉"


# ---------------------------------------------------------------- pure helpers (unit-tested)


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`███▎·· 55%`: a bar in eighths of a cell, then the percentage (floored: 100% means done)."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return f"{bar.ljust(width, '·')} {int(fraction * 100):3d}%"


def fraction_done(info: TransferInfo) -> float:
    if info.total:
        return info.have / info.total
    return 1.0 if info.state in ("seeding", "complete") else 0.0


def label(info: TransferInfo) -> str:
    return info.name or f"{info.info_hash[:16]}…"


def column_widths(table_width: int) -> tuple[int, int]:
    """(name, bar) widths that fill a table `table_width` columns wide: the defaults at 80
    columns; the room beyond goes a third to the bar (up to MAX_BAR_WIDTH), the rest to the name."""
    spare = max(0, table_width - SCROLLBAR_WIDTH - BASE_TABLE_WIDTH)
    bar_extra = min(spare // 3, MAX_BAR_WIDTH - BAR_WIDTH)
    return NAME_WIDTH + spare - bar_extra, BAR_WIDTH + bar_extra


def transfer_row(info: TransferInfo, name_width: int = NAME_WIDTH, bar_width: int = BAR_WIDTH) -> list[Cell]:
    """One table row. The arrow says the direction (↓ download, ↑ seed) and the rate is
    that direction's."""
    state = info.state
    done = fraction_done(info)
    seed = info.direction == "seed"
    speed = info.upload_bytes_per_s if seed else info.bytes_per_s
    eta = info.eta_s
    active = state in ("downloading", "finding")
    name = info.name or f"{info.info_hash[:10]}…"
    return [
        cell(fit(f"{'↑' if seed else '↓'} {name}", name_width), name.lower()),
        cell(progress_bar(done, bar_width), done, "green" if done >= 1.0 else ""),
        cell(size(info.size).rjust(SIZE_WIDTH), info.size),
        cell((rate(speed) if speed or active else "-").rjust(RATE_WIDTH), speed),
        cell((age(eta) if eta is not None and active else "-").rjust(ETA_WIDTH),
             eta if eta is not None and active else float("inf")),
        cell(str(info.active_peers).rjust(3), info.active_peers),
        cell(state.ljust(STATE_WIDTH), state, STATE_STYLE.get(state, "")),
    ]


def fit(text: str, width: int) -> str:
    """Exactly `width` characters: padded, or cut with an ellipsis."""
    return text.ljust(width) if len(text) <= width else text[:width - 1] + "…"


def summary_text(infos: list[TransferInfo]) -> Text:
    down = sum(i.bytes_per_s for i in infos)
    up = sum(i.upload_bytes_per_s for i in infos)
    downloading = sum(1 for i in infos if i.state in ("downloading", "finding", "verifying"))
    seeding = sum(1 for i in infos if i.state == "seeding")
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{plural(len(infos), 'transfer')} · {downloading} active · {seeding} seeding · ")
    text.append(f"↓ {rate(down)} ↑ {rate(up)}")
    return text


def detail_text(info: TransferInfo) -> Text:
    text = Text(no_wrap=False, overflow="ellipsis")
    text.append(info.name or "(metainfo pending)", style="bold")
    text.append(f"  {info.info_hash}\n")
    text.append(f"{info.have}/{info.total} pieces · uploaded {size(info.uploaded)} · {info.path or 'no path yet'}")
    if info.error:
        text.append(f"\n✗ {info.error}", style="red")
    return text


# ---------------------------------------------------------------- the tab


class TransfersTab(NodeTab):
    TITLE = "Transfers"
    BINDINGS = [
        Binding("p", "pause", "Pause/resume"),
        Binding("c", "cancel", "Cancel"),
        Binding("v", "verify", "Verify"),
        Binding("enter", "details", "Details", key_display="⏎", priority=True),
        Binding("d", "catalogue", "Catalogue"),
    ]
    DEFAULT_CSS = """
    TransfersTab #tr-status { height: 1; color: $foreground-muted; padding: 0 1; }
    TransfersTab #tr-table { height: 1fr; }
    TransfersTab #tr-detail { height: auto; max-height: 4; border-top: solid $primary; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.infos: dict[str, TransferInfo] = {}  # info hash -> newest TransferInfo
        self.running = False  # the node runs a torrent manager (its snapshot has transfers)
        self._fetching = False
        self.widths = (NAME_WIDTH, BAR_WIDTH)  # (name, bar): column_widths of the tab's width

    def compose(self) -> ComposeResult:
        yield Static("waiting for the node…", id="tr-status")
        table = FilterTable(COLUMNS, id="tr-table")
        table.display = False
        yield table
        detail = Static("", id="tr-detail")
        detail.display = False
        yield detail

    @property
    def table(self) -> FilterTable:
        return self.query_one("#tr-table", FilterTable)

    # ------------------------------------------------------------ data

    def update_snapshot(self, snap: Snapshot) -> None:
        if snap.transfers is None:
            self.running = False
            self.query_one("#tr-status", Static).update(NOT_RUNNING)
            return
        self.show_infos(snap.transfers)

    def refresh_transfers(self) -> None:
        """Ask for `api.transfers()` now (after a command, and each second while a details
        screen is open), one request at a time."""
        bridge = console(self.app).bridge
        if self._fetching or not self.running or not bridge.running:
            return
        self._fetching = True

        async def fetch() -> None:
            try:
                infos = await bridge.call(bridge.api.transfers)
            except Exception:  # the next snapshot will tell; a refresh is only a hurry-up
                return
            finally:
                self._fetching = False
            self.show_infos(infos)

        self.run_worker(fetch(), group="transfers-refresh", exit_on_error=False)

    def show_infos(self, infos: list[TransferInfo]) -> None:
        self.running = True
        self.infos = {i.info_hash: i for i in infos}
        table = self.table
        if not table.display:
            table.display = True
            self.query_one("#tr-detail", Static).display = True
        table.set_rows(self._rows())
        self.query_one("#tr-status", Static).update(summary_text(infos))
        self._show_detail()
        for screen in self.app.screen_stack:
            if isinstance(screen, TransferDetailsScreen):
                screen.update_info(self.infos)

    def _rows(self) -> dict[str, list[Cell]]:
        return {k: transfer_row(i, *self.widths) for k, i in self.infos.items()}

    def on_resize(self) -> None:
        widths = column_widths(self.size.width)
        if widths != self.widths:
            self.widths = widths
            self.table.rebuild(self._rows())  # columns sized afresh: narrower cells too

    def _show_detail(self) -> None:
        detail = self.query_one("#tr-detail", Static)
        info = self.selected()
        detail.update(detail_text(info) if info else
                      "no transfers yet — d: catalogue of shared files · ^p › Download…: by info hash"
                      if not self.infos else "select a transfer (↑/↓)")

    def selected(self) -> TransferInfo | None:
        key = self.table.selected_key
        return self.infos.get(key) if key else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_details()  # a click on the highlighted row

    def filter_target(self) -> FilterTable | None:
        return self.table if self.table.display else None

    # ------------------------------------------------------------ commands (all through the bridge)

    def _run(self, label: str, op: Callable[[NodeAPI], Awaitable[T]],
             on_ok: Callable[[T], None] | None = None) -> None:
        if not self.running:
            self.app.notify(f"{label}: {NO_MANAGER}", severity="warning")
            return

        def done(result: T) -> None:
            if on_ok is not None:
                on_ok(result)
            self.refresh_transfers()

        console(self.app).run_node(label, op, on_ok=done)

    def _need_selection(self) -> TransferInfo | None:
        info = self.selected()
        if info is None:
            self.app.notify("no transfer selected", severity="warning")
        return info

    def _find(self, info_hash: str | None) -> TransferInfo | None:
        return self.infos.get(info_hash) if info_hash else self._need_selection()

    def action_pause(self, info_hash: str | None = None) -> None:
        info = self._find(info_hash)
        if info is None:
            return
        name, ih = label(info), info.info_hash
        if info.state == "paused":
            self._run(f"resume {name}", lambda api: api.torrent_resume(ih),
                      on_ok=lambda _: self.app.notify(f"resumed {name}", timeout=3))
        elif info.state in ("cancelled", "error", "complete"):
            self.app.notify(f"{name} is {info.state}: nothing to pause", severity="warning")
        else:
            self._run(f"pause {name}", lambda api: api.torrent_pause(ih),
                      on_ok=lambda _: self.app.notify(f"paused {name}", timeout=3))

    def action_cancel(self, info_hash: str | None = None) -> None:
        info = self._find(info_hash)
        if info is None:
            return
        name, ih = label(info), info.info_hash
        seed = info.direction == "seed" or info.state in ("seeding", "complete")
        question = (f"Stop sharing {name}? The file stays on disk." if seed else
                    f"Cancel the download of {name}? {name}.part is kept: downloading it again resumes.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._run(f"cancel {name}", lambda api: api.torrent_cancel(ih),
                          on_ok=lambda _: self.app.notify(f"cancelled {name}", timeout=3))

        self.app.push_screen(ConfirmScreen(question), answered)

    def action_verify(self, info_hash: str | None = None) -> None:
        info = self._find(info_hash)
        if info is None:
            return
        name, ih = label(info), info.info_hash

        def verified(bad: list[int]) -> None:
            if bad:
                self.app.notify(f"verify {name}: {len(bad)} bad piece(s) — fetched again when downloading",
                                severity="error", timeout=8)
            else:
                self.app.notify(f"verify {name}: every piece is good", timeout=5)

        self.app.notify(f"verifying {name}…", timeout=3)
        self._run(f"verify {name}", lambda api: api.torrent_verify(ih), on_ok=verified)

    def action_details(self) -> None:
        info = self._need_selection()
        if info is not None:
            self.app.push_screen(TransferDetailsScreen(self, info.info_hash))

    def action_catalogue(self) -> None:
        if not self.running:
            self.app.notify(NO_MANAGER, severity="warning")
            return
        self.app.push_screen(CatalogueScreen(self))

    async def catalogue(self, timeout: float) -> list[CatalogueEntry]:
        """The files torrent servers offer (for the catalogue screen; raises on failure)."""
        bridge = console(self.app).bridge
        return await bridge.call(bridge.api.torrent_catalogue, timeout)

    def prompt_download(self, initial: str = "") -> None:
        self.app.push_screen(PromptScreen("Download a file by info hash", check_info_hash, [],
                                          "64 hex digits (the catalogue shows them: key d)", initial),
                             lambda v: self.download(v) if v else None)

    def download(self, info_hash: str, name: str = "") -> None:
        """Start fetching `info_hash` (hex) and show it in the table."""
        shown = name or f"{info_hash[:16]}…"
        console(self.app).action_show_tab("transfers")
        self._run(f"download {shown}", lambda api: api.torrent_add(info_hash),
                  on_ok=lambda _: self.app.notify(f"fetching {shown}", timeout=4))
