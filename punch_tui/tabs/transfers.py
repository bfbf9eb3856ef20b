"""Transfers: the torrent roles' downloads and shared files.

With a torrent role the tab asks the node's TorrentManager (`node.torrent`, see
docs/TORRENT.md "Data API") for `snapshot()` through the bridge each time a node
snapshot arrives, and shows one row per transfer: progress bar, size, rates, ETA, peers,
state. Keys: p pause/resume, c cancel (confirmed), v verify, enter details (pieces map and
per-peer rates, live), d the catalogue of files that servers offer. Without a manager
(e.g. attached over the control socket) the flat `node.transfers()` rows fill the same
table; roles without transfers say so.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from punch_tui.format import age, rate, size
from punch_tui.peers import InputError
from punch_tui.snapshot import Snapshot
from punch_tui.tabs.base import NodeTab
from punch_tui.widgets.table import Cell, FilterTable, cell

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
_EIGHTHS = " ▏▎▍▌▋▊▉"


# ---------------------------------------------------------------- pure helpers (unit-tested)


def check_info_hash(text: str) -> str:
    """An info hash as typed: 64 hex digits (spaces around are fine) -> lower-case hex."""
    value = text.strip().lower()
    if not value:
        raise InputError("type an info hash (64 hex digits)")
    if len(value) != 64:
        raise InputError(f"an info hash is 64 hex digits, this is {len(value)} characters")
    bad = next((c for c in value if c not in "0123456789abcdef"), None)
    if bad is not None:
        raise InputError(f"an info hash is hexadecimal; {bad!r} is not a hex digit")
    return value


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`███▎·· 55%`: a bar in eighths of a cell, then the percentage (floored: 100% means done)."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return f"{bar.ljust(width, '·')} {int(fraction * 100):3d}%"


def fraction_done(info: dict[str, Any]) -> float:
    total, have = int(info.get("total") or 0), int(info.get("have") or 0)
    if total:
        return have / total
    return 1.0 if info.get("state") in ("seeding", "complete") else 0.0


def transfer_row(info: dict[str, Any]) -> list[Cell]:
    """One table row from a TransferInfo mapping (`dataclasses.asdict`). The arrow says the
    direction (↓ download, ↑ seed) and the rate is that direction's."""
    state = str(info.get("state", "?"))
    done = fraction_done(info)
    seed = info.get("direction") == "seed"
    speed = float(info.get("upload_bytes_per_s" if seed else "bytes_per_s") or 0.0)
    eta = info.get("eta_s")
    active = state in ("downloading", "finding")
    name = str(info.get("name") or f"{str(info.get('info_hash', ''))[:10]}…")
    return [
        cell(fit(f"{'↑' if seed else '↓'} {name}", NAME_WIDTH), name.lower()),
        cell(progress_bar(done), done, "green" if done >= 1.0 else ""),
        cell(size(info.get("size") or 0).rjust(SIZE_WIDTH), int(info.get("size") or 0)),
        cell((rate(speed) if speed or active else "-").rjust(RATE_WIDTH), speed),
        cell((age(eta) if eta is not None and active else "-").rjust(ETA_WIDTH),
             eta if eta is not None and active else float("inf")),
        cell(str(info.get("peers", 0)).rjust(3), int(info.get("peers") or 0)),
        cell(state.ljust(STATE_WIDTH), state, STATE_STYLE.get(state, "")),
    ]


def fit(text: str, width: int) -> str:
    """Exactly `width` characters: padded, or cut with an ellipsis."""
    return text.ljust(width) if len(text) <= width else text[:width - 1] + "…"


def flat_row(row: dict[str, Any]) -> list[Cell]:
    """A row of the generic `node.transfers()` shape (id, name, state, progress "55.0%", …)."""
    try:
        done = float(str(row.get("progress", "0")).strip().rstrip("%")) / 100.0
    except ValueError:
        done = 0.0
    state = str(row.get("state", "?"))
    return [cell(fit(str(row.get("name", "?")), NAME_WIDTH)), cell(progress_bar(done), done),
            cell(_fmt(row.get("size")).rjust(SIZE_WIDTH)), cell(_fmt(row.get("down")).rjust(RATE_WIDTH)),
            cell(_fmt(row.get("eta")).rjust(ETA_WIDTH)), cell(_fmt(row.get("peers")).rjust(3), row.get("peers")),
            cell(state.ljust(STATE_WIDTH), state, STATE_STYLE.get(state, ""))]


def summary_text(infos: list[dict[str, Any]]) -> Text:
    down = sum(float(i.get("bytes_per_s") or 0) for i in infos)
    up = sum(float(i.get("upload_bytes_per_s") or 0) for i in infos)
    downloading = sum(1 for i in infos if i.get("state") in ("downloading", "finding", "verifying"))
    seeding = sum(1 for i in infos if i.get("state") == "seeding")
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{len(infos)} transfer(s) · {downloading} active · {seeding} seeding · ")
    text.append(f"↓ {rate(down)} ↑ {rate(up)}")
    return text


def detail_text(info: dict[str, Any]) -> Text:
    text = Text(no_wrap=False, overflow="ellipsis")
    text.append(str(info.get("name") or "(metainfo pending)"), style="bold")
    text.append(f"  {info.get('info_hash', '')}\n")
    text.append(f"{info.get('have', 0)}/{info.get('total', 0)} pieces · uploaded {size(info.get('uploaded') or 0)}"
                f" · {info.get('path') or 'no path yet'}")
    if info.get("error"):
        text.append(f"\n✗ {info['error']}", style="red")
    return text


def rows_from_dicts(items: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], dict[str, list[Cell]]]:
    """Columns (in first-seen key order) and keyed rows from a list of flat dicts."""
    keys: list[str] = []
    for item in items:
        for k in item:
            if k not in keys:
                keys.append(k)
    rows: dict[str, list[Cell]] = {}
    for i, item in enumerate(items):
        row_key = str(item.get("id", item.get("name", i)))
        rows[row_key] = [cell(_fmt(item.get(k)), item.get(k) if isinstance(item.get(k), int | float) else None)
                         for k in keys]
    return [(k, k.replace("_", " ").capitalize()) for k in keys], rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)


# ---------------------------------------------------------------- run on the node's side (via bridge.call)


async def torrent_snapshot(node: Any) -> list[dict[str, Any]] | None:
    """Every transfer as a plain mapping; None when the node has no torrent manager."""
    mgr = getattr(node, "torrent", None)
    if mgr is None:
        return None
    infos = mgr.snapshot()
    if inspect.isawaitable(infos):  # attached: the node's answer, already plain
        infos = await infos
    return [as_dict(info) for info in infos]


def as_dict(value: Any) -> Any:
    """A dataclass (this process's manager) or a mapping (an attached node's) as a dict."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value)


async def torrent_call(node: Any, method: str, *args: Any) -> Any:
    """`node.torrent.METHOD(*args)`, awaited when it is a coroutine (verify, catalogue)."""
    mgr = getattr(node, "torrent", None)
    if mgr is None:
        raise RuntimeError(NO_MANAGER)
    if method == "add":
        args = (bytes.fromhex(args[0]), *args[1:])
    result = getattr(mgr, method)(*args)
    if inspect.isawaitable(result):
        result = await result
    if method == "add":
        return None  # the Transfer object stays on the node's side
    if method == "catalogue":
        return [as_dict(e) for e in result]
    return result


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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.infos: dict[str, dict[str, Any]] = {}  # info hash -> TransferInfo mapping (newest)
        self.rich = False  # the manager answers (else flat rows or nothing)
        self._fetching = False

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
        status = self.query_one("#tr-status", Static)
        if snap.transfers is None:
            status.update(NOT_RUNNING)
            return
        table = self.table
        if not table.display:
            table.display = True
            self.query_one("#tr-detail", Static).display = True
        if not self.rich:  # until the manager answers, show the generic rows
            rows = {str(r.get("id", r.get("name", i))): flat_row(r) for i, r in enumerate(snap.transfers)}
            table.set_rows(rows)
            status.update(f"{len(rows)} transfer(s)")
        self.refresh_transfers()

    def refresh_transfers(self) -> None:
        """Ask the manager for its snapshot (one request at a time)."""
        bridge = getattr(self.app, "bridge", None)
        if bridge is None or self._fetching or not getattr(bridge, "running", False):
            return
        self._fetching = True

        async def fetch() -> None:
            try:
                infos = await bridge.call(torrent_snapshot, bridge.node)
            except Exception:
                infos = None
            finally:
                self._fetching = False
            if infos is not None:
                self.show_infos(infos)

        self.run_worker(fetch(), group="transfers-snapshot", exit_on_error=False)

    def show_infos(self, infos: list[dict[str, Any]]) -> None:
        self.rich = True
        self.infos = {str(i["info_hash"]): i for i in infos}
        table = self.table
        table.display = True
        table.set_rows({k: transfer_row(i) for k, i in self.infos.items()})
        self.query_one("#tr-status", Static).update(summary_text(infos))
        self._show_detail()
        for screen in self.app.screen_stack:
            update = getattr(screen, "update_info", None)
            if update is not None:
                update(self.infos)

    def _show_detail(self) -> None:
        detail = self.query_one("#tr-detail", Static)
        info = self.selected()
        detail.update(detail_text(info) if info else
                      "no transfers yet — d: catalogue of shared files · ^p › Download…: by info hash"
                      if not self.infos else "select a transfer (↑/↓)")

    def selected(self) -> dict[str, Any] | None:
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

    def _run(self, label: str, method: str, *args: Any, on_ok: Callable[[Any], None] | None = None) -> None:
        app: Any = self.app
        if not self.rich:
            app.notify(f"{label}: {NO_MANAGER}", severity="warning")
            return

        def done(result: Any) -> None:
            if on_ok is not None:
                on_ok(result)
            self.refresh_transfers()

        app.run_node(label, torrent_call, app.bridge.node, method, *args, on_ok=done)

    def _need_selection(self) -> dict[str, Any] | None:
        info = self.selected()
        if info is None:
            self.app.notify("no transfer selected", severity="warning")
        return info

    def action_pause(self, info_hash: str | None = None) -> None:
        info = self.infos.get(info_hash) if info_hash else self._need_selection()
        if info is None:
            return
        name = info.get("name") or info["info_hash"][:16]
        ih = str(info["info_hash"])
        if info.get("state") == "paused":
            self._run(f"resume {name}", "resume", ih, on_ok=lambda _: self.app.notify(f"resumed {name}", timeout=3))
        elif info.get("state") in ("cancelled", "error", "complete"):
            self.app.notify(f"{name} is {info.get('state')}: nothing to pause", severity="warning")
        else:
            self._run(f"pause {name}", "pause", ih, on_ok=lambda _: self.app.notify(f"paused {name}", timeout=3))

    def action_cancel(self, info_hash: str | None = None) -> None:
        from punch_tui.screens.torrent import ConfirmScreen

        info = self.infos.get(info_hash) if info_hash else self._need_selection()
        if info is None:
            return
        name = info.get("name") or info["info_hash"][:16]
        seed = info.get("direction") == "seed" or info.get("state") in ("seeding", "complete")
        question = (f"Stop sharing {name}? The file stays on disk." if seed else
                    f"Cancel the download of {name}? {name}.part is kept: downloading it again resumes.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._run(f"cancel {name}", "cancel", info["info_hash"],
                          on_ok=lambda _: self.app.notify(f"cancelled {name}", timeout=3))

        self.app.push_screen(ConfirmScreen(question), answered)

    def action_verify(self, info_hash: str | None = None) -> None:
        info = self.infos.get(info_hash) if info_hash else self._need_selection()
        if info is None:
            return
        name = info.get("name") or info["info_hash"][:16]

        def verified(bad: list[int]) -> None:
            if bad:
                self.app.notify(f"verify {name}: {len(bad)} bad piece(s) — fetched again when downloading",
                                severity="error", timeout=8)
            else:
                self.app.notify(f"verify {name}: every piece is good", timeout=5)

        self.app.notify(f"verifying {name}…", timeout=3)
        self._run(f"verify {name}", "verify", info["info_hash"], on_ok=verified)

    def action_details(self) -> None:
        from punch_tui.screens.torrent import TransferDetailsScreen

        info = self._need_selection()
        if info is not None:
            self.app.push_screen(TransferDetailsScreen(self, str(info["info_hash"])))

    def action_catalogue(self) -> None:
        from punch_tui.screens.torrent import CatalogueScreen

        if not self.rich:
            self.app.notify(NO_MANAGER, severity="warning")
            return
        self.app.push_screen(CatalogueScreen(self))

    def prompt_download(self, initial: str = "") -> None:
        from punch_tui.screens.prompt import PromptScreen

        self.app.push_screen(PromptScreen("Download a file by info hash", check_info_hash, [],
                                          "64 hex digits (the catalogue shows them: key d)", initial),
                             lambda v: self.download(v) if v else None)

    def download(self, info_hash: str, name: str = "") -> None:
        """Start fetching `info_hash` (hex) and show it in the table."""
        label = name or f"{info_hash[:16]}…"
        app: Any = self.app
        app.action_show_tab("transfers")
        self._run(f"download {label}", "add", info_hash,
                  on_ok=lambda _: app.notify(f"fetching {label}", timeout=4))
