"""Torrent events on the node bus; `--json` prints them one per line (see docs/TORRENT.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from punch_net.events import Event


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True, kw_only=True)
class Shared(Event):
    kind: ClassVar[str] = "shared"
    name: str
    size: int
    info_hash: str

    def human(self) -> str:
        return f"[green]✓[/green] sharing {self.name} ({human_size(self.size)})  {self.info_hash}"


@dataclass(frozen=True, kw_only=True)
class Announced(Event):
    kind: ClassVar[str] = "announced"
    name: str
    info_hash: str

    def human(self) -> str | None:
        return None  # `shared` already told the user; this is for scripts and tests


@dataclass(frozen=True, kw_only=True)
class Unshared(Event):
    kind: ClassVar[str] = "unshared"
    name: str
    info_hash: str

    def human(self) -> str:
        return f"[dim]✗ no longer sharing {self.name}[/dim]"


@dataclass(frozen=True, kw_only=True)
class Hashing(Event):
    kind: ClassVar[str] = "hashing"
    name: str
    done: int
    total: int

    def human(self) -> str | None:
        return None  # the TUI shows it; the CLI prints `shared` when done


@dataclass(frozen=True, kw_only=True)
class Available(Event):
    kind: ClassVar[str] = "available"
    name: str
    size: int
    info_hash: str
    providers: int

    def human(self) -> str:
        return (f"{self.info_hash}  {human_size(self.size):>10}  {self.providers} provider"
                f"{'s' if self.providers != 1 else ' '}  {self.name}")


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    kind: ClassVar[str] = "progress"
    info_hash: str
    have: int
    total: int
    bytes_per_s: float
    peers: int

    def human(self) -> str | None:
        return None  # drawn by the progress bar


@dataclass(frozen=True, kw_only=True)
class Complete(Event):
    kind: ClassVar[str] = "complete"
    info_hash: str
    path: str
    sha256: str
    resumed: int = 0  # pieces found verified on disk at start (an earlier run)
    downloaded: int = 0  # bytes received from peers in this run (duplicates included)
    from_peers: dict[str, int] = field(default_factory=dict)  # peer id -> verified pieces it sent
    transfer_s: float = 0.0  # seconds from metainfo in hand to the file verified and in place

    def human(self) -> str:
        return f"[green]✓[/green] complete: {self.path}  sha256 {self.sha256}"


@dataclass(frozen=True, kw_only=True)
class PeerMarked(Event):
    kind: ClassVar[str] = "peer_bad"
    info_hash: str
    peer_id: str
    reason: str

    def human(self) -> str:
        return f"[red]![/red] peer {self.peer_id} marked bad: {self.reason}"
