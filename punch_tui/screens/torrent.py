"""Screens of the Transfers tab: a yes/no confirmation (cancel), the catalogue of files
torrent servers offer (enter fetches one), and the live details of one transfer (pieces
map coloured by source peer, download and upload rate over the last minutes, per-peer
rates). Node calls go through the tab (seen here
as `TransferControls`, so this module does not import it), which runs them through the
bridge in workers."""

from __future__ import annotations

from typing import Protocol

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from punch_net.torrent.info import CatalogueEntry, TransferInfo
from punch_tui.console import console
from punch_tui.format import size
from punch_tui.widgets.plots import TRANSFER_PLOTS, RatePlot
from punch_tui.widgets.table import Cell, FilterTable, cell
from punch_tui.widgets.transfers import TransferDetails

CATALOGUE_TIMEOUT = 10.0
CATALOGUE_COLUMNS = [("name", "Name"), ("size", "Size"), ("providers", "Servers"), ("info_hash", "Info hash")]


class TransferControls(Protocol):
    """What these screens need of the Transfers tab."""

    infos: dict[str, TransferInfo]

    def refresh_transfers(self) -> None: ...

    def action_pause(self, info_hash: str | None = None) -> None: ...

    def action_verify(self, info_hash: str | None = None) -> None: ...

    def action_cancel(self, info_hash: str | None = None) -> None: ...

    def download(self, info_hash: str, name: str = "") -> None: ...

    async def catalogue(self, timeout: float) -> list[CatalogueEntry]: ...


class ConfirmScreen(ModalScreen[bool]):
    """A question; y / enter answers yes, n / esc no."""

    BINDINGS = [Binding("y,enter", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 64; max-width: 100%; height: auto; border: round $warning;
                               background: $surface; padding: 0 1; }
    ConfirmScreen #confirm-hint { color: $foreground-muted; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Confirm"
            yield Label(self.question, id="confirm-question")
            yield Label("y / enter: yes · n / esc: no", id="confirm-hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def catalogue_rows(entries: list[CatalogueEntry]) -> dict[str, list[Cell]]:
    return {e.info_hash: [cell(e.name or "?"), cell(size(e.size), e.size), cell(e.providers, e.providers),
                          cell(e.info_hash)]
            for e in entries}


class CatalogueScreen(ModalScreen[None]):
    """Files offered by the torrent servers found in the DHT; enter fetches the selected one."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("enter", "fetch", "Fetch", key_display="⏎", priority=True),
        Binding("r", "reload", "Search again"),
    ]
    DEFAULT_CSS = """
    CatalogueScreen { align: center middle; }
    CatalogueScreen > Vertical { width: 100%; height: 90%; border: round $primary; background: $surface; }
    CatalogueScreen #cat-status { height: 1; padding: 0 1; color: $foreground-muted; }
    CatalogueScreen #cat-table { height: 1fr; }
    CatalogueScreen #cat-hint { height: 1; padding: 0 1; color: $foreground-muted; }
    """

    def __init__(self, tab: TransferControls, timeout: float = CATALOGUE_TIMEOUT) -> None:
        super().__init__()
        self.tab = tab
        self.timeout = timeout
        self.entries: dict[str, CatalogueEntry] = {}
        self.searching = False

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Catalogue — files offered by torrent servers"
            yield Static("", id="cat-status")
            yield FilterTable(CATALOGUE_COLUMNS, id="cat-table")
            yield Static("⏎ fetch the selected file · r search again · esc close", id="cat-hint")

    def on_mount(self) -> None:
        self.query_one("#cat-table", FilterTable).focus()
        self.action_reload()

    def action_reload(self) -> None:
        if self.searching:
            return
        self.searching = True
        status = self.query_one("#cat-status", Static)
        status.update(f"searching the DHT for torrent servers (up to {self.timeout:g} s)…")

        async def search() -> None:
            try:
                entries = await self.tab.catalogue(self.timeout)
            except Exception as exc:  # NodeError, BridgeError: shown in place of the list
                status.update(f"✗ catalogue: {exc}")
                return
            finally:
                self.searching = False
            self.entries = {e.info_hash: e for e in entries}
            self.query_one("#cat-table", FilterTable).set_rows(catalogue_rows(entries))
            servers = max((e.providers for e in entries), default=0)
            status.update(f"{len(entries)} file(s) from the servers found"
                          + (f" (up to {servers} per file)" if entries else
                             " — none found; is a torrent server bootstrapped to the same DHT? (r retries)"))

        self.run_worker(search(), group="catalogue", exclusive=True, exit_on_error=False)

    def action_fetch(self) -> None:
        key = self.query_one("#cat-table", FilterTable).selected_key
        entry = self.entries.get(key) if key else None
        if entry is None:
            self.app.notify("no file selected", severity="warning")
            return
        self.dismiss(None)
        self.tab.download(entry.info_hash, entry.name)

    def action_close(self) -> None:
        self.dismiss(None)


class TransferDetailsScreen(ModalScreen[None]):
    """One transfer, refreshed with every manager snapshot the tab receives."""

    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("p", "pause", "Pause/resume"),
        Binding("v", "verify", "Verify"),
        Binding("c", "cancel", "Cancel"),
    ]
    DEFAULT_CSS = """
    TransferDetailsScreen { align: center middle; }
    TransferDetailsScreen > Vertical { width: 100%; height: 90%; border: round $primary; background: $surface;
                                       padding: 0 1; }
    TransferDetailsScreen #det-hash, TransferDetailsScreen #det-hint { height: 1; color: $foreground-muted; }
    TransferDetailsScreen #det-rates { height: 5; }
    TransferDetailsScreen RatePlot { height: 5; width: 1fr; margin: 0 1 0 0; }
    """

    def __init__(self, tab: TransferControls, info_hash: str) -> None:
        super().__init__()
        self.tab = tab
        self.info_hash = info_hash

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Transfer details"
            yield Static(self.info_hash, id="det-hash")
            with Horizontal(id="det-rates"):  # from the app's history of every snapshot, kept while closed
                yield RatePlot(TRANSFER_PLOTS[0], id="det-down")
                yield RatePlot(TRANSFER_PLOTS[1], id="det-up")
            yield TransferDetails(id="det-body")
            yield Static("p pause/resume · v verify · c cancel · esc close", id="det-hint")

    def on_mount(self) -> None:
        self.update_info(self.tab.infos)
        self.set_interval(1.0, self.tab.refresh_transfers)  # the tab's own refresh slows when hidden

    def update_info(self, infos: dict[str, TransferInfo]) -> None:
        info = infos.get(self.info_hash)
        if info is not None:
            self.query_one("#det-body", TransferDetails).show(info)
        history = console(self.app).history
        down, up = history.transfer(self.info_hash)
        self.query_one("#det-down", RatePlot).show(down, history.now)
        self.query_one("#det-up", RatePlot).show(up, history.now)

    def action_pause(self) -> None:
        self.tab.action_pause(self.info_hash)

    def action_verify(self) -> None:
        self.tab.action_verify(self.info_hash)

    def action_cancel(self) -> None:
        self.tab.action_cancel(self.info_hash)

    def action_close(self) -> None:
        self.dismiss(None)
