"""Serving side of `/punch/torrent/1.0.0`: catalogue, metainfo, bitfield and pieces.

Used by the torrent server and by a client that seeds what it downloaded. One stream
serves one client: a reader task feeds the stream's bytes to a `ServeSession` (the
protocol, sans-IO), which queues requests; a writer task takes batches from it, reads the
pieces (at once when the page cache holds them, else in a thread, many at a time) and
writes them a few pieces a write.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from punch_net.groups import first_error
from punch_net.p2p.patches.yamux_window_halves import release_in_halves
from punch_net.p2p.streams import reset_quietly
from punch_net.torrent import wire
from punch_net.torrent.choker import Candidate, Choker
from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.peer_session import Close, Send, ServeSession
from punch_net.torrent.rates import RateMeter
from punch_net.torrent.spreader import Spreader

READ_SIZE = 1 << 20
WRITE_PIECES = 3  # 64 KiB pieces per stream write: 192 KiB writes, not multi-MiB ones (see the writer)
IDLE_TIMEOUT = 120.0  # a stream that sends nothing for this long is closed
WRITE_TIMEOUT = 60.0  # a reader that takes nothing for this long is dropped
_ZERO = RateMeter()
SPREAD_SLOTS = 8  # upload slots of a spreading seed (choker.SLOTS otherwise)


@dataclass
class Source:
    """Something we can serve: a complete file (`have` None) or a partial download."""

    meta: Metainfo
    path: Path
    have: bytearray | None = None
    uploaded: int = 0
    peers: dict[str, RateMeter] = field(default_factory=dict)
    meter: RateMeter = field(default_factory=RateMeter)
    started: float = field(default_factory=time.time)
    # bytes/s each peer (str id) gives us, for tit-for-tat while downloading; None: complete
    down_rates: Callable[[], dict[str, float]] | None = None
    sent: list[int] = field(default_factory=list)  # per piece: copies uploaded (spread the rarest first)
    queued: list[int] = field(default_factory=list)  # per piece: streams with a REQUEST for it queued
    # A server that started with the whole file: each piece leaves once before any twice
    # while a swarm downloads it (spreader.py). None for a download's (partial) source.
    spreader: Spreader | None = None

    def __post_init__(self) -> None:
        if not self.sent:
            self.sent = [0] * self.meta.num_pieces
        if not self.queued:
            self.queued = [0] * self.meta.num_pieces

    def has(self, index: int) -> bool:
        return 0 <= index < self.meta.num_pieces and (self.have is None or bool(self.have[index]))

    def completed(self, path: Path) -> None:
        """The download behind this partial source is whole at `path`: streams open on it
        go on serving from there."""
        self.path = path
        self.have = None
        self.down_rates = None

    def bitfield(self) -> bytes:
        n = self.meta.num_pieces
        if self.have is None:
            return wire.pack_bits(bytearray(b"\x01" * n), n)
        return wire.pack_bits(self.have, n)


class TorrentService:
    """The protocol handler; `sources` maps info hash -> Source."""

    def __init__(self, on_error: Callable[[str], None] | None = None,
                 on_interested: Callable[[bytes, ID], None] | None = None,
                 addrs_of: Callable[[str], list[str]] | None = None) -> None:
        self.sources: dict[bytes, Source] = {}
        self.paused: set[bytes] = set()
        self.on_error = on_error
        self.active_streams = 0
        # A peer opened a download stream for one of our torrents: a downloader learns of
        # a fellow downloader this way long before the DHT names it.
        self.on_interested = on_interested
        self.addrs_of = addrs_of  # a peer's dialable addresses, for PEERS (peer exchange)
        self._streams: dict[bytes, dict[ServeSession[Source], Callable[[], None]]] = {}
        self._chokers: dict[bytes, Choker] = {}

    def have(self, info_hash: bytes, index: int) -> None:
        """A partial source verified `index`: queue a HAVE on every stream serving it."""
        for session, poke in self._streams.get(info_hash, {}).items():
            session.have(index)
            poke()

    def add(self, source: Source) -> None:
        self.sources[source.meta.info_hash] = source

    def remove(self, info_hash: bytes) -> None:
        self.sources.pop(info_hash, None)

    def catalogue(self) -> list[dict[str, Any]]:
        return [{"name": s.meta.name, "size": s.meta.length, "info_hash": ih.hex(),
                 "complete": s.have is None}
                for ih, s in sorted(self.sources.items(), key=lambda kv: kv[1].meta.name)
                if ih not in self.paused]

    def read_batch(self, path: Path, meta: Metainfo, indexes: list[int]) -> list[bytes]:
        """Read pieces (blocking: runs in a thread). Tests override this to serve bad data.

        Each run of consecutive pieces is one pread: a thread that releases the GIL once
        per batch, not once per piece, is not kept waiting for it by the event loop."""
        pieces = _read_pieces(path, meta, indexes, 0)
        assert pieces is not None
        return pieces

    def read_cached(self, path: Path, meta: Metainfo, indexes: list[int]) -> list[bytes] | None:
        """The same pieces if all are in the page cache (read at once, on the event loop:
        ~3 µs a piece, where a thread hand-off costs more than the read), else None.
        None too where read_batch is overridden, so an override sees every read."""
        if _NOWAIT is None or type(self).read_batch is not _READ_BATCH:
            return None
        try:
            return _read_pieces(path, meta, indexes, _NOWAIT)
        except OSError:  # EAGAIN (not cached), or no RWF_NOWAIT here: the thread reads it
            return None

    async def handle_stream(self, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        self.active_streams += 1
        try:
            try:
                await self._serve(stream, peer)
            except BaseExceptionGroup as group:
                raise first_error(group) from None
        except (wire.ProtocolError, trio.TooSlowError) as exc:
            if self.on_error is not None:
                self.on_error(f"torrent peer {peer}: {exc}")
            await reset_quietly(stream)
        except Exception:
            await reset_quietly(stream)
        finally:
            self.active_streams -= 1
            try:
                await stream.close()
            except Exception:
                pass

    async def _serve(self, stream: INetStream, peer: str) -> None:
        session: ServeSession[Source] = ServeSession(self, peer)
        release_in_halves(stream)  # a WINDOW_UPDATE per half window of REQUESTs read, not per read
        wake = trio.Event()
        registered: bytes | None = None

        def poke() -> None:
            wake.set()

        async def writer() -> None:
            nonlocal wake
            while True:
                control = session.take_control()  # HAVE, CHOKE, UNCHOKE, PEERS
                if control:
                    await _write(stream, control)
                action = session.next_read()
                if action is None:
                    if session.pending_control:
                        continue
                    wake = trio.Event()
                    await wake.wait()
                    continue
                if isinstance(action, Close):
                    return  # the client is done and every request answered
                src = session.source
                assert src is not None
                pieces = self.read_cached(src.path, src.meta, action.indexes)
                if pieces is None:
                    try:
                        pieces = await trio.to_thread.run_sync(self.read_batch, src.path, src.meta, action.indexes)
                    except OSError:
                        pieces = None
                if pieces is None:
                    await _write(stream, session.pieces_read(action.indexes, None))
                else:  # a few pieces a write: a multi-MiB bytes would be a fresh mmap whose pages all fault in
                    for at in range(0, len(pieces), WRITE_PIECES):
                        await _write(stream, session.pieces_read(action.indexes[at:at + WRITE_PIECES],
                                                                 pieces[at:at + WRITE_PIECES]))
                if pieces is not None:
                    size = sum(map(len, pieces))
                    now = time.monotonic()
                    src.uploaded += size
                    src.meter.add(size, now)
                    src.peers.setdefault(peer, RateMeter()).add(size, now)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                while True:
                    try:
                        with trio.fail_after(IDLE_TIMEOUT):
                            data = await stream.read(READ_SIZE)
                    except StreamEOF:
                        data = b""
                    for action in session.receive_data(data):
                        if isinstance(action, Send):
                            await _write(stream, action.data)
                        elif isinstance(action, Close):
                            raise wire.ProtocolError(action.reason)
                    if registered is None and session.source is not None:
                        registered = session.source.meta.info_hash
                        self._register(registered, session, poke, stream)
                    if session.queued or session.pending_control or not data:
                        wake.set()
                    if not data:
                        return  # the writer drains what was asked, then the nursery ends
        finally:
            session.release()
            if registered is not None:
                self._streams.get(registered, {}).pop(session, None)
                self._chokers.get(registered, Choker()).forget(session)

    def _register(self, info_hash: bytes, session: ServeSession[Source], poke: Callable[[], None],
                  stream: INetStream) -> None:
        """A new downloader of `info_hash`: HAVEs and choking reach it from now on; it
        starts unchoked while an upload slot is free."""
        streams = self._streams.setdefault(info_hash, {})
        if self.addrs_of is not None:
            # Peer exchange: the newcomer and the downloaders already here learn of each
            # other at once, so they trade before the DHT would have named them.
            others = [s.peer for s in streams if s.peer != session.peer]
            session.tell_peers([(p, self.addrs_of(p)) for p in others[:wire.PEERS_PER_MESSAGE]])
            me = [(session.peer, self.addrs_of(session.peer))]
            for other, other_poke in streams.items():
                if other.peer != session.peer:
                    other.tell_peers(me)
                    other_poke()
        streams[session] = poke
        src = self.sources.get(info_hash)
        if src is not None and src.spreader is not None and src.spreader.wake is None:
            src.spreader.wake = lambda: self._poke_all(info_hash)
        choker = self._chokers.setdefault(info_hash, self._new_choker(info_hash))
        if not choker.admit(session):
            session.set_choked(True)
            poke()
        if self.on_interested is not None:
            self.on_interested(info_hash, stream.muxed_conn.peer_id)

    def _new_choker(self, info_hash: bytes) -> Choker:
        """A spreading seed sends each piece once whoever gets it, so it has slots for more
        downloaders: each fresh piece enters the swarm at one more place."""
        src = self.sources.get(info_hash)
        return Choker(slots=SPREAD_SLOTS) if src is not None and src.spreader is not None else Choker()

    def _poke_all(self, info_hash: bytes) -> None:
        for poke in self._streams.get(info_hash, {}).values():
            poke()

    def tick(self) -> None:
        """About once a second (the manager): spreading seeds move offers left unrequested."""
        for src in list(self.sources.values()):
            if src.spreader is not None:
                src.spreader.tick()

    def downloaders(self, info_hash: bytes) -> dict[str, bool]:
        """Peers downloading `info_hash` from us now -> whether we choke them."""
        return {session.peer: session.choked for session in self._streams.get(info_hash, {})}

    def rechoke(self) -> None:
        """Choose every torrent's upload slots again (the manager calls this every RECHOKE_EVERY)."""
        now = time.monotonic()
        for info_hash, streams in list(self._streams.items()):
            src = self.sources.get(info_hash)
            if src is None or not streams:
                continue
            gives = src.down_rates() if src.down_rates is not None else {}
            candidates = []
            for session, _ in streams.items():
                pid = session.peer
                # Downloading: rank by what the peer gives us (tit-for-tat); seeding: by
                # what it takes, so the fastest downloaders get the pieces out soonest.
                rate = gives.get(pid, 0.0) if src.have is not None else src.peers.get(pid, _ZERO).rate(now)
                candidates.append(Candidate(session, rate, interested=True))
            unchoked = self._chokers.setdefault(info_hash, self._new_choker(info_hash)).rechoke(candidates)
            for session, poke in streams.items():
                if session.set_choked(session not in unchoked):
                    poke()


_READ_BATCH = TorrentService.read_batch
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)  # Linux 4.14+: fail rather than wait for the disk


def _read_pieces(path: Path, meta: Metainfo, indexes: list[int], flags: int) -> list[bytes] | None:
    """`indexes`' pieces, each run of consecutive ones with one preadv; with `flags`
    RWF_NOWAIT, None as soon as a run is not wholly in the page cache."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        out: list[bytes] = []
        start = 0
        while start < len(indexes):
            end = start + 1
            while end < len(indexes) and indexes[end] == indexes[end - 1] + 1:
                end += 1
            # one preadv straight into a buffer per piece: a pread of the whole run
            # is a multi-MiB bytes (an mmap whose pages all fault in) and a copy per piece out of it
            bufs = [bytearray(meta.piece_size(i)) for i in indexes[start:end]]
            offset = indexes[start] * meta.piece_length
            want = sum(map(len, bufs))
            got = os.preadv(fd, bufs, offset, flags) if flags else os.preadv(fd, bufs, offset)
            if got != want:
                if flags:
                    return None  # partly cached (or short): the thread's plain read decides
                raise OSError(errno.EIO, f"{path} is shorter than its metainfo says")
            out.extend(cast("list[bytes]", bufs))  # only joined into frames: bytes-like will do
            start = end
        return out
    finally:
        os.close(fd)


async def _write(stream: INetStream, data: bytes) -> None:
    with trio.fail_after(WRITE_TIMEOUT):
        await stream.write(data)


