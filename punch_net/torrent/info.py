"""What fronts see of transfers: pure data (snapshot rows, catalogue entries)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransferPeer:
    """One peer of a transfer, both ways: what it gives us, what we give it, what it has,
    and how fetching from it goes (the fields from `state` on; zero for a peer we fetch nothing from)."""

    peer_id: str
    down_rate: float  # bytes/s of pieces from it
    up_rate: float  # bytes/s of pieces to it
    have: int  # pieces it has (its bitfield and HAVEs)
    choked: bool  # we choke it: its requests are not served
    interested: bool  # it is interested in what we have
    state: str = ""  # fetching from it: connecting | active | closed | bad; "" we fetch nothing from it
    downloaded: int = 0  # bytes of pieces received from it
    pieces: int = 0  # pieces from it that passed their hash
    bad_pieces: int = 0  # pieces from it that failed their hash
    outstanding: int = 0  # our requests to it not answered yet
    error: str = ""  # why we stopped fetching from it (state closed or bad)


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
    error: str = ""
    # everyone we exchange pieces with, either way: peers we fetch from first (in the order
    # we met them), then peers that only fetch from us
    peers: tuple[TransferPeer, ...] = ()
    piece_sources: tuple[int, ...] = ()  # per piece: index into `peers` of who sent it, -1 not yet, -2 from disk


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    size: int
    info_hash: str
    providers: int
