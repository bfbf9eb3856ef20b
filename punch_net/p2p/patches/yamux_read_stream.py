"""py-libp2p's yamux `read_stream` spends ~45 µs of Python on every read of a busy stream.

Bug (speed): `Yamux.read_stream` takes `streams_lock` (a trio checkpoint) and formats three
debug-log f-strings (each renders the peer id in base58, even with debug logging off) for
every read, then copies what it returns: `bytes(buffer)`, or twice (`bytes(buffer[:n])`)
when more is buffered than the read asked for. A 256 MiB download makes ~1,300 such reads.
Fix: when the stream has data buffered and is open, return it at once, without the lock
(nothing here awaits) or the f-strings, copying once; a stream marked with
`hand_over_buffer` (a download's piece stream) whose whole buffer is wanted gets the
buffer itself and a fresh one goes in its place: no copy at all. Every other case (nothing
buffered, closed, reset, shutting down, lock held) takes py-libp2p's path.
Process-wide; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/stream_muxer/yamux/yamux.py#L1051;
no upstream issue found.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import INetStream
from libp2p.stream_muxer.yamux import yamux

ORIGINAL_READ_STREAM = yamux.Yamux.read_stream
_FLAG = "_punch_hand_over_buffer"


def install() -> None:
    if yamux.Yamux.read_stream is not ORIGINAL_READ_STREAM:
        return
    original = ORIGINAL_READ_STREAM

    async def read_stream(self: Any, stream_id: int, n: int = -1) -> bytes:
        buffers = self.stream_buffers
        buffer: bytearray | None = buffers.get(stream_id)
        stream = self.streams.get(stream_id)
        if not buffer or stream is None or stream.closed or stream.reset_received \
                or self.event_shutting_down.is_set() or self.streams_lock.locked():
            return await original(self, stream_id, n)
        if n is None or n < 0 or n >= len(buffer):
            if getattr(stream, _FLAG, False):
                buffers[stream_id] = bytearray()
                return buffer  # type: ignore[return-value]  # bytes-like; nothing else holds it now
            data = bytes(buffer)
            buffer.clear()
            return data
        with memoryview(buffer) as view:
            data = bytes(view[:n])
        del buffer[:n]  # O(1) at the front of a bytearray
        return data

    yamux.Yamux.read_stream = read_stream  # type: ignore[method-assign]


def hand_over_buffer(stream: INetStream) -> bool:
    """Reads of `stream` that take everything buffered get yamux's buffer itself (a
    bytearray nobody else writes to any more), not a copy. False (nothing done) when it is
    not a py-libp2p yamux stream."""
    muxed = getattr(stream, "muxed_stream", None)
    if not isinstance(muxed, yamux.YamuxStream):
        return False
    setattr(muxed, _FLAG, True)
    return True
