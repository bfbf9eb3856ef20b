"""The human-mode progress line of `punch torrent-client` (rich, on stderr).

One live line, redrawn in place; status lines are printed *above* it through the same
console (rich's Live does that), never into it. The Printer (cli/main.py) routes its lines
here while the line is live on a terminal that stdout shares, and hands it the `progress`
events (fresher than the 0.25 s polls of the NodeAPI) and `complete`. On a stderr that is
not a terminal nothing is drawn while downloading; the final state is one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from punch_net.api import NodeAPI
from punch_net.cli.render import peers_text
from punch_net.torrent import events as tev
from punch_net.torrent.events import human_size
from punch_net.torrent.info import TransferInfo

REFRESH = 0.25
FINAL = ("complete", "seeding", "error", "cancelled")


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"




class LiveProgress:
    """The download's progress line; `print` puts a status line above it."""

    def __init__(self, info_hash: str, console: Console | None = None) -> None:
        self.info_hash = info_hash
        self.console = console or Console(stderr=True, highlight=False)
        self.active = False
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def takes_status_lines(self) -> bool:
        """Status lines go above the live line when both share the terminal; otherwise they
        go to stdout as usual (a file or pipe cannot collide with the terminal's line)."""
        return self.active and self.console.is_terminal and sys.stdout.isatty()

    def print(self, line: str) -> None:
        self.console.print(line, soft_wrap=True)

    async def run(self, api: NodeAPI) -> None:
        """Draw until the transfer is final (or we are cancelled: the last state stays)."""
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]:>11}"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[peers]}"),
            TextColumn("[dim]{task.fields[state]}"),
            console=self.console,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        task = bar.add_task(self.info_hash[:12], total=None, rate="", eta="--:--", peers=peers_text(0),
                            state="finding")
        self._bar, self._task = bar, task
        self.active = True
        try:
            with bar:
                while self.active:
                    info = next((t for t in await api.transfers() if t.info_hash == self.info_hash), None)
                    if info is not None and self.active:
                        _update(bar, task, info)
                        if info.state in FINAL:
                            break
                    await trio.sleep(REFRESH)
        finally:
            self.finish()

    def progress(self, event: tev.Progress) -> None:
        if self.active and self._bar is not None and self._task is not None and event.info_hash == self.info_hash:
            self._bar.update(self._task, total=event.total or None, completed=event.have,
                             rate=f"{human_size(event.bytes_per_s)}/s", peers=peers_text(event.peers))

    def complete(self, event: tev.Complete) -> None:
        """Draw the finished state (its event comes before the next poll would see it) and
        stop the live line, so the `complete` line and what follows go below it."""
        bar, task = self._bar, self._task
        if self.active and bar is not None and task is not None and event.info_hash == self.info_hash:
            total = bar.tasks[0].total or 1
            # the finished line keeps what the download was (the live rate and peer count
            # just before the end say little once the peers have gone): its average rate, its sources
            rate = f"{human_size(event.downloaded / event.transfer_s)}/s" if event.transfer_s > 0 else ""
            bar.update(task, description=Path(event.path).name, total=total, completed=total, state="complete",
                       eta="--:--", rate=rate, peers=f"from {peers_text(len(event.from_peers))}")
            self.finish()

    def finish(self) -> None:
        """Stop the live line (its last state stays, on a line of its own)."""
        if self.active and self._bar is not None:
            self.active = False
            self._bar.stop()


def _update(bar: Progress, task: TaskID, info: TransferInfo) -> None:
    done = info.state in ("complete", "seeding")
    bar.update(task, description=info.name or info.info_hash[:12],
               total=info.total or (1 if done else None),
               completed=info.have if info.total else (1 if done else 0),
               rate=f"{human_size(info.bytes_per_s)}/s", eta=_eta(info.eta_s), peers=peers_text(info.active_peers),
               state=info.state)
