"""py-libp2p's yamux receive loop spends ~20 µs of Python on every DATA frame.

Bug (speed): `Yamux.handle_incoming` reads every frame header and body with `read_exactly`,
which copies the bytes twice even when one read returned them all, and handles each frame
with debug-log f-strings and a lock acquire that yields to the scheduler.
Fix: `read_exactly` returns a complete read as it is; asked for a frame header by
`handle_incoming`, it reads headers itself, and a plain DATA frame (no flags, open stream:
the bulk of any transfer) is read and buffered right here, as handle_incoming would buffer
it (its body straight from the secured session's Noise messages into the stream's buffer,
without joining them first). Every other frame (SYN, ACK, FIN, RST, window updates, pings, GO_AWAY, unknown streams)
goes back to handle_incoming as its header. The DATA body deadline (py-libp2p reads
it from the environment for every frame) is read once per connection. Process-wide; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/stream_muxer/yamux/yamux.py#L1182;
no upstream issue found.
"""

from __future__ import annotations

import math
import struct
import weakref
from typing import Any

import trio
from libp2p.io.exceptions import IncompleteReadError
from libp2p.io.utils import read_exactly as copying_read_exactly
from libp2p.stream_muxer.yamux import yamux

from punch_net.p2p.patches import secure_session_read
from punch_net.p2p.patches.secure_session_read import read_parts

counts = {"fast_data_frames": 0}  # DATA frames buffered by the fast path (tests look at it)
ORIGINAL_READ_EXACTLY = yamux.read_exactly
ORIGINAL_HANDLE_INCOMING = yamux.Yamux.handle_incoming


def install() -> None:
    if yamux.Yamux.handle_incoming is not ORIGINAL_HANDLE_INCOMING:
        return
    header_size = yamux.HEADER_SIZE
    unpack = struct.Struct(yamux.YAMUX_HEADER_FORMAT).unpack
    max_frame = yamux.MAX_WINDOW_SIZE
    data_read_timeout = yamux._yamux_data_read_timeout
    muxers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # secured conn -> Yamux
    body_next: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()  # conn -> handed-back body
    # Yamux -> its DATA body deadline, read from the environment once per connection: py-libp2p
    # reads it (os.getenv, ~16 µs) for every frame
    body_timeout: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def plain_read_exactly(reader: Any, n: int, retry_count: int = 100) -> bytes:
        first: bytes = await reader.read(n)
        if len(first) == n:
            return first
        if not first:
            return await copying_read_exactly(reader, n, retry_count)  # raises its error for a closed stream
        return first + await copying_read_exactly(reader, n - len(first), retry_count)

    def buffer_data(mux: Any, stream_id: int, parts: list[bytes | memoryview], length: int) -> None:
        """What handle_incoming does with a flagless DATA frame (its body in `parts`); the
        caller holds (or made sure nobody holds) streams_lock."""
        stream = mux.streams.get(stream_id)
        if stream is None:
            return  # closed meanwhile: dropped, as handle_incoming drops it
        buffer = mux.stream_buffers[stream_id]
        for part in parts:
            buffer.extend(part)
        stream.recv_window -= length
        if stream.recv_window < 0:
            yamux.logger.warning(f"Stream {stream_id}: peer exceeded receive window by {-stream.recv_window} bytes")
            stream.recv_window = 0
        mux.stream_events[stream_id].set()
        if stream.closed:
            mux._finalize_stream_locked(stream, fully_closed=True)

    async def read_exactly(reader: Any, n: int, retry_count: int = 100) -> bytes:
        mux_ref = muxers.get(reader) if n == header_size else None
        if mux_ref is None or body_next.pop(reader, 0) == n:
            return await plain_read_exactly(reader, n, retry_count)
        secured_parts = secure_session_read.patched(reader)
        # One cancel scope for the whole loop, its deadline set around each body read: a
        # trio.fail_after per frame cost ~15 µs (a new scope and a contextmanager each time)
        with trio.CancelScope() as scope:
            while True:
                header = await plain_read_exactly(reader, header_size, retry_count)
                mux = mux_ref()
                _version, typ, flags, stream_id, length = unpack(header)
                if mux is None or typ != yamux.TYPE_DATA or flags or not 0 < length <= max_frame \
                        or stream_id not in mux.streams or mux.event_shutting_down.is_set():
                    if typ == yamux.TYPE_DATA and length > 0:
                        body_next[reader] = length  # its body is handle_incoming's next read
                    return header
                timeout = body_timeout.get(mux)
                if timeout is None:
                    timeout = body_timeout[mux] = data_read_timeout()
                scope.deadline = trio.current_time() + timeout
                if secured_parts:  # the body as the Noise messages' pieces: no joined copy
                    parts = await read_parts(reader, length)
                    if sum(map(len, parts)) != length:
                        raise IncompleteReadError(f"connection closed in a {length}-byte DATA frame",
                                                  expected_bytes=length,
                                                  received_bytes=sum(map(len, parts)))
                else:
                    parts = [await plain_read_exactly(reader, length, retry_count)]
                scope.deadline = math.inf  # headers may wait for ever, as in py-libp2p
                if mux.streams_lock.locked():
                    async with mux.streams_lock:
                        buffer_data(mux, stream_id, parts, length)
                else:  # nobody holds it and nothing here awaits: as good as holding it
                    buffer_data(mux, stream_id, parts, length)
                counts["fast_data_frames"] += 1
        raise trio.TooSlowError  # the scope caught its own deadline: a body read took too long

    original_handle_incoming = ORIGINAL_HANDLE_INCOMING

    async def handle_incoming(self: Any) -> None:
        muxers[self.secured_conn] = weakref.ref(self)
        await original_handle_incoming(self)

    yamux.read_exactly = read_exactly
    yamux.Yamux.handle_incoming = handle_incoming  # type: ignore[method-assign]
