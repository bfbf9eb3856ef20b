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



@dataclass(frozen=True, kw_only=True)
class Announced(Event):
    kind: ClassVar[str] = "announced"
    name: str
    info_hash: str



@dataclass(frozen=True, kw_only=True)
class Unshared(Event):
    kind: ClassVar[str] = "unshared"
    name: str
    info_hash: str



@dataclass(frozen=True, kw_only=True)
class Hashing(Event):
    kind: ClassVar[str] = "hashing"
    transient: ClassVar[bool] = True
    name: str
    done: int
    total: int



@dataclass(frozen=True, kw_only=True)
class Available(Event):
    kind: ClassVar[str] = "available"
    name: str
    size: int
    info_hash: str
    providers: int



@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    kind: ClassVar[str] = "progress"
    transient: ClassVar[bool] = True
    info_hash: str
    have: int
    total: int
    bytes_per_s: float
    peers: int
    # Per peer id, bytes/s over the last 5 s: pieces it sends us / pieces we send it (peers
    # with a rate of 0 both ways are left out).
    down_by_peer: dict[str, float] = field(default_factory=dict)
    up_by_peer: dict[str, float] = field(default_factory=dict)



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



@dataclass(frozen=True, kw_only=True)
class PeerMarked(Event):
    kind: ClassVar[str] = "peer_bad"
    info_hash: str
    peer_id: str
    reason: str

