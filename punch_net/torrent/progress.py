"""The human-mode progress bar of `punch torrent-client` (rich, on stderr)."""

from __future__ import annotations

import trio
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from punch_net.torrent.events import human_size
from punch_net.torrent.transfer import Transfer

REFRESH = 0.25


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


async def progress_bar(transfer: Transfer) -> None:
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>11}"),
        TextColumn("ETA {task.fields[eta]}"),
        TextColumn("{task.fields[peers]} peers"),
        TextColumn("[dim]{task.fields[state]}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(transfer.hex[:12], total=None, rate="", eta="--:--", peers=0, state="finding")
        while True:
            info = transfer.snapshot()
            bar.update(task, description=info.name or transfer.hex[:12],
                       total=info.total or (1 if info.state in ("complete", "seeding") else None),
                       completed=info.have if info.total else (1 if info.state in ("complete", "seeding") else 0),
                       rate=f"{human_size(info.bytes_per_s)}/s", eta=_eta(info.eta_s), peers=info.active_peers,
                       state=info.state)
            if transfer.done.is_set():
                break
            await trio.sleep(REFRESH)
