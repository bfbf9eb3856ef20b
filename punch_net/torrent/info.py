"""What fronts see of transfers: pure data (snapshot rows, catalogue entries)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeerSnapshot:
    peer_id: str
    number: int  # 1-based; `TransferInfo.piece_from` refers to peers by this number
    state: str  # connecting | active | closed | bad
    bytes_per_s: float
    downloaded: int
    pieces: int
    bad_pieces: int
    outstanding: int
    error: str


@dataclass(frozen=True)
class TransferPeer:
    """One peer of a transfer, both ways: what it gives us, what we give it, what it has."""

    peer_id: str
    down_rate: float  # bytes/s of pieces from it
    up_rate: float  # bytes/s of pieces to it
    have: int  # pieces it has (its bitfield and HAVEs)
    choked: bool  # we choke it: its requests are not served
    interested: bool  # it is interested in what we have


@dataclass(frozen=True)
class TransferInfo:
    info_hash: str
    name: str  # "" until the metainfo is known
    size: int
    have: int  # verified pieces
    total: int
    bytes_per_s: float
    eta_s: float | None  # None: unknown (no rate yet)
    active_peers: int  # peers currently sending
    state: str  # finding | downloading | paused | verifying | seeding | complete | cancelled | error
    direction: str  # download | seed
    path: str
    uploaded: int
    upload_bytes_per_s: float
    peer_stats: list[PeerSnapshot]
    piece_from: list[int]  # per piece: -1 missing, 0 verified from disk (earlier run), k = peer number k
    error: str = ""
    peers: tuple[TransferPeer, ...] = ()  # everyone we exchange pieces with, either way
    piece_sources: tuple[int, ...] = ()  # per piece: index into `peers` of who sent it, -1 not yet, -2 from disk


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    size: int
    info_hash: str
    providers: int
