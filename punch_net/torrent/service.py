"""Serving side of `/punch/torrent/1.0.0`: catalogue, metainfo, bitfield and pieces.

Used by the torrent server and by a client that seeds what it downloaded. One stream
serves one client: a reader task parses requests into a bounded queue, a writer task
reads pieces off the event loop (in a thread, many at a time) and writes them in large
batches, so one stream moves ~1 MiB per write.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from punch_net.torrent import wire
from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.rates import RateMeter

READ_SIZE = 1 << 20
MAX_QUEUED = 1024  # requests one stream may have outstanding; more is a protocol error
BATCH_BYTES = 1 << 20  # pieces coalesced into one write
IDLE_TIMEOUT = 120.0  # a stream that sends nothing for this long is closed
WRITE_TIMEOUT = 60.0  # a reader that takes nothing for this long is dropped


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

    def has(self, index: int) -> bool:
        return 0 <= index < self.meta.num_pieces and (self.have is None or bool(self.have[index]))

    def bitfield(self) -> bytes:
        n = self.meta.num_pieces
        if self.have is None:
            return wire.pack_bits(bytearray(b"\x01" * n), n)
        return wire.pack_bits(self.have, n)


class TorrentService:
    """The protocol handler; `sources` maps info hash -> Source."""

    def __init__(self, on_error: Callable[[str], None] | None = None) -> None:
        self.sources: dict[bytes, Source] = {}
        self.paused: set[bytes] = set()
        self.on_error = on_error
        self.active_streams = 0

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
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            out: list[bytes] = []
            start = 0
            while start < len(indexes):
                end = start + 1
                while end < len(indexes) and indexes[end] == indexes[end - 1] + 1:
                    end += 1
                first, last = indexes[start], indexes[end - 1]
                offset = first * meta.piece_length
                size = last * meta.piece_length + meta.piece_size(last) - offset
                block = os.pread(fd, size, offset)
                with memoryview(block) as view:
                    for i in indexes[start:end]:
                        at = i * meta.piece_length - offset
                        out.append(bytes(view[at:at + meta.piece_size(i)]))
                start = end
            return out
        finally:
            os.close(fd)

    async def handle_stream(self, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        self.active_streams += 1
        try:
            try:
                await self._serve(stream, peer)
            except BaseExceptionGroup as group:
                raise _unwrap(group) from None
        except (wire.ProtocolError, trio.TooSlowError) as exc:
            if self.on_error is not None:
                self.on_error(f"torrent peer {peer}: {exc}")
            await _reset(stream)
        except Exception:
            await _reset(stream)
        finally:
            self.active_streams -= 1
            try:
                await stream.close()
            except Exception:
                pass

    async def _serve(self, stream: INetStream, peer: str) -> None:
        decoder = wire.Decoder(wire.CLIENT_TYPES)
        queue: deque[int] = deque()
        queued: set[int] = set()
        state: dict[str, Any] = {"source": None, "wake": trio.Event(), "done": False}

        async def writer() -> None:
            while True:
                while not queue:
                    if state["done"]:
                        return
                    state["wake"] = trio.Event()
                    await state["wake"].wait()
                src: Source = state["source"]
                batch: list[int] = []
                size = 0
                while queue and size < BATCH_BYTES:
                    index = queue.popleft()
                    queued.discard(index)
                    batch.append(index)
                    size += src.meta.piece_size(index)
                try:
                    pieces = await trio.to_thread.run_sync(self.read_batch, src.path, src.meta, batch)
                except OSError:
                    await _write(stream, b"".join(wire.encode_index(wire.REJECT, i) for i in batch))
                    continue
                parts: list[bytes] = []
                for index, data in zip(batch, pieces, strict=True):
                    parts.append(wire.encode_piece_header(index, len(data)))
                    parts.append(data)
                await _write(stream, b"".join(parts))
                now = time.monotonic()
                src.uploaded += size
                src.meter.add(size, now)
                src.peers.setdefault(peer, RateMeter()).add(size, now)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            while True:
                try:
                    with trio.fail_after(IDLE_TIMEOUT):
                        data = await stream.read(READ_SIZE)
                except StreamEOF:
                    data = b""
                if not data:
                    state["done"] = True
                    state["wake"].set()
                    return  # writer drains what was asked, then the nursery ends
                replies: list[bytes] = []
                for msg in decoder.feed(data):
                    replies += self._handle(msg, state, queue, queued)
                if replies:
                    await _write(stream, b"".join(replies))
                if queue:
                    state["wake"].set()

    def _handle(self, msg: wire.Message, state: dict[str, Any], queue: deque[int], queued: set[int]) -> list[bytes]:
        t = msg.type
        if t == wire.REQUEST:
            src: Source | None = state["source"]
            if src is None:
                raise wire.ProtocolError("REQUEST before INTERESTED")
            if src.meta.info_hash in self.paused or not src.has(msg.index):
                return [wire.encode_index(wire.REJECT, msg.index)]
            if msg.index in queued:
                return []
            if len(queue) >= MAX_QUEUED:
                raise wire.ProtocolError(f"more than {MAX_QUEUED} requests outstanding")
            queue.append(msg.index)
            queued.add(msg.index)
            return []
        if t == wire.CANCEL:
            if msg.index in queued:
                queued.discard(msg.index)
                try:
                    queue.remove(msg.index)
                except ValueError:
                    pass
            return []
        if t == wire.LIST:
            return [wire.encode_catalogue(self.catalogue())]
        if t == wire.GET_META:
            src = self.sources.get(msg.info_hash)
            if src is None or msg.info_hash in self.paused:
                return [wire.encode_error("unknown info hash")]
            return [wire.encode_meta(msg.info_hash, src.meta.encode())]
        if t == wire.INTERESTED:
            src = self.sources.get(msg.info_hash)
            if src is None or msg.info_hash in self.paused:
                return [wire.encode_error("unknown info hash")]
            if state["source"] is not None and state["source"] is not src:
                raise wire.ProtocolError("one stream serves one torrent")
            state["source"] = src
            return [wire.encode_bitfield(msg.info_hash, src.bitfield())]
        raise wire.ProtocolError(f"unexpected message 0x{t:02x}")


def _unwrap(group: BaseExceptionGroup) -> BaseException:
    for exc in group.exceptions:
        if not isinstance(exc, trio.Cancelled):
            return exc
    return group


async def _write(stream: INetStream, data: bytes) -> None:
    with trio.fail_after(WRITE_TIMEOUT):
        await stream.write(data)


async def _reset(stream: INetStream) -> None:
    try:
        await stream.reset()
    except Exception:
        pass
