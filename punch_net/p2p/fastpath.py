"""A faster bulk data path through py-libp2p 0.8.1's Noise and yamux layers.

py-libp2p moves a 64 KiB yamux frame as two Noise messages, and reads each Noise message
with a 2-byte `recv` for its length and one or more `recv`s for its body, every one a
trip through trio's scheduler; the writer sends each Noise message with its own
`send_all`, and yamux writes one frame per call. On loopback that per-frame Python work,
not the wire, bounds a stream at ~200 MB/s. The patches here keep the wire format and
every protocol rule; they only change how many bytes each Python-level step handles:

- the post-handshake Noise reader receives up to 256 KiB per `recv`, cuts Noise messages
  out of its own buffer and decrypts them in place (the handshake reader is untouched, so
  nothing it reads can be over-read);
- a large write is encrypted into all its Noise messages and sent with one `send_all`;
- a secured session keeps the rest of the last message as (message, offset) instead of
  copying each message through a BytesIO, and yamux's `read_exactly` stops copying a read
  that was already complete;
- a plain DATA frame (most of a transfer) is buffered for its stream straight from the
  header reader, without a turn through py-libp2p's per-frame loop (see
  `_yamux_read_exactly`); every other frame still goes through that loop;
- a large yamux write cuts up to four frames at a time and writes them as one (see
  `_yamux_batched_write`);
- `grow_receive_window` opens one yamux stream's receive window up front (below);
- the transport counts the bytes it moves (`connection_bytes`), which the node's traffic
  counters add up.

`install()` is idempotent and is called by the host builder. Tests:
tests/integration/test_fastpath.py (byte-exact transfers between patched hosts and with a
plain py-libp2p process, many streams at once, the window, the counters).
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import INetStream

RAW_READ = 256 * 1024  # bytes asked of the socket per recv
WRITE_BATCH = 4  # yamux frames per Noise write at most: 256 KiB, so other streams' frames wait little
counts = {"fast_data_frames": 0}  # DATA frames buffered by the fast path (tests look at it)
NOISE_OVERHEAD = 2 + 16  # length prefix and Poly1305 tag around each Noise message
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _patch_noise_transport()
    _patch_secure_session()
    _yamux_read_exactly()
    _yamux_batched_write()
    _installed = True


def _patch_noise_transport() -> None:
    from cryptography.exceptions import InvalidTag
    from libp2p.io.exceptions import IncompleteReadError
    from libp2p.security.noise import io as noise_io
    from noise.exceptions import NoiseInvalidMessage

    limit = noise_io.MAX_PLAINTEXT_LENGTH
    cls = noise_io.NoiseTransportReadWriter
    original_write = cls.write_msg

    async def read_msg(self: Any, prefix_encoded: bool = False) -> bytes:
        buf: bytearray | None = self.__dict__.get("_punch_rbuf")
        if buf is None:
            buf = self._punch_rbuf = bytearray()
        raw = self.read_writer.read_write_closer
        while True:
            if len(buf) >= 2:
                end = 2 + ((buf[0] << 8) | buf[1])
                if len(buf) >= end:
                    if prefix_encoded:
                        encrypted = bytes(buf[2 + len(self.prefix):end])
                        del buf[:end]
                        return self.decrypt(encrypted)  # type: ignore[no-any-return]
                    cipher = self.noise_state.noise_protocol.cipher_state_decrypt
                    with memoryview(buf) as view:
                        try:  # straight from our buffer: noise's own decrypt() wants a bytes copy
                            result: bytes = cipher.decrypt_with_ad(None, view[2:end])
                        except InvalidTag:
                            raise NoiseInvalidMessage("Failed authentication of message") from None
                    del buf[:end]  # O(1) at the front of a bytearray
                    return result
            data = await raw.read(RAW_READ)
            self._punch_in = self.__dict__.get("_punch_in", 0) + len(data)
            if not data:
                raise IncompleteReadError(
                    f"Connection closed during read operation: {len(buf)} bytes of a Noise message",
                    expected_bytes=2, received_bytes=len(buf))
            buf += data

    async def write_msg(self: Any, msg: bytes, prefix_encoded: bool = False) -> None:
        if prefix_encoded or len(msg) <= limit:
            await original_write(self, msg, prefix_encoded)
            self._punch_out = self.__dict__.get("_punch_out", 0) + len(msg) + NOISE_OVERHEAD
            return
        view = memoryview(msg)
        parts: list[bytes] = []
        for off in range(0, len(msg), limit):
            encrypted = self.encrypt(bytes(view[off:off + limit]))
            parts.append(len(encrypted).to_bytes(2, "big"))
            parts.append(encrypted)
        wire = b"".join(parts)
        await self.read_writer.read_write_closer.write(wire)
        self._punch_out = self.__dict__.get("_punch_out", 0) + len(wire)

    cls.read_msg = read_msg  # type: ignore[method-assign]
    cls.write_msg = write_msg  # type: ignore[method-assign]


def _patch_secure_session() -> None:
    from libp2p.io.exceptions import ConnectionClosedError
    from libp2p.security.secure_session import SecureSession

    async def read(self: Any, n: int | None = None) -> bytes:
        """As SecureSession.read: n=None -> what is buffered or the next message;
        otherwise exactly n bytes (fewer only at end of stream). What is left of the last
        message is kept as (message, offset): a read that spans messages copies once."""
        if n == 0:
            return b""
        msg, off = self.__dict__.get("_punch_pending", (b"", 0))
        left = len(msg) - off
        if left and (n is None or n <= left):
            end = len(msg) if n is None else off + n
            self._punch_pending = (msg, end)
            return msg if off == 0 and end == len(msg) else msg[off:end]
        parts: list[bytes | memoryview] = [memoryview(msg)[off:]] if left else []
        got = left
        self._punch_pending = (b"", 0)
        while n is None or got < n:
            nxt: bytes = await self.conn.read_msg()
            if nxt == b"":
                if parts:
                    return b"".join(parts)
                raise ConnectionClosedError("Connection closed")
            if n is None:
                return nxt
            need = n - got
            if len(nxt) <= need:
                parts.append(nxt)
                got += len(nxt)
            else:
                parts.append(memoryview(nxt)[:need])
                got = n
                self._punch_pending = (nxt, need)
        first = parts[0]
        return first if len(parts) == 1 and isinstance(first, bytes) else b"".join(parts)

    SecureSession.read = read  # type: ignore[method-assign]


def _yamux_read_exactly() -> None:
    """yamux reads every frame header and body with `read_exactly`, which copies the
    bytes twice even when one read returned them all; ours returns that read as it is.

    It also takes plain DATA frames off py-libp2p's receive loop: asked for a frame header
    by `Yamux.handle_incoming`, it reads headers itself, and a DATA frame without flags
    for an open stream (the bulk of any transfer) is read and buffered right here, as
    handle_incoming would buffer it, before the next header is read. Every other frame
    (SYN, ACK, FIN, RST, window updates, pings, GO_AWAY, unknown streams) goes back to
    handle_incoming as its header. That loop spends ~20 µs of Python per frame on
    debug-log f-strings and on a lock acquire that yields to the scheduler."""
    import struct
    import weakref

    from libp2p.io.utils import read_exactly as copying_read_exactly
    from libp2p.stream_muxer.yamux import yamux

    header_size = yamux.HEADER_SIZE
    unpack = struct.Struct(yamux.YAMUX_HEADER_FORMAT).unpack
    max_frame = yamux.MAX_WINDOW_SIZE
    data_read_timeout = yamux._yamux_data_read_timeout
    muxers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # secured conn -> Yamux
    body_next: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()  # conn -> handed-back body

    async def plain_read_exactly(reader: Any, n: int, retry_count: int = 100) -> bytes:
        first: bytes = await reader.read(n)
        if len(first) == n:
            return first
        if not first:
            return await copying_read_exactly(reader, n, retry_count)  # raises its error for a closed stream
        return first + await copying_read_exactly(reader, n - len(first), retry_count)

    def buffer_data(mux: Any, stream_id: int, data: bytes) -> None:
        """What handle_incoming does with a flagless DATA frame; the caller holds (or
        made sure nobody holds) streams_lock."""
        stream = mux.streams.get(stream_id)
        if stream is None:
            return  # closed meanwhile: dropped, as handle_incoming drops it
        mux.stream_buffers[stream_id].extend(data)
        stream.recv_window -= len(data)
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
        while True:
            header = await plain_read_exactly(reader, header_size, retry_count)
            mux = mux_ref()
            _version, typ, flags, stream_id, length = unpack(header)
            if mux is None or typ != yamux.TYPE_DATA or flags or not 0 < length <= max_frame \
                    or stream_id not in mux.streams or mux.event_shutting_down.is_set():
                if typ == yamux.TYPE_DATA and length > 0:
                    body_next[reader] = length  # its body is handle_incoming's next read
                return header
            with trio.fail_after(data_read_timeout()):
                data = await plain_read_exactly(reader, length, retry_count)
            if mux.streams_lock.locked():
                async with mux.streams_lock:
                    buffer_data(mux, stream_id, data)
            else:  # nobody holds it and nothing here awaits: as good as holding it
                buffer_data(mux, stream_id, data)
            counts["fast_data_frames"] += 1

    original_handle_incoming = yamux.Yamux.handle_incoming

    async def handle_incoming(self: Any) -> None:
        muxers[self.secured_conn] = weakref.ref(self)
        await original_handle_incoming(self)

    yamux.read_exactly = read_exactly
    yamux.Yamux.handle_incoming = handle_incoming  # type: ignore[method-assign]


def _yamux_batched_write() -> None:
    """py-libp2p writes a large yamux write one 64 KiB frame at a time, each frame taking
    three locks (two of them yielding to the scheduler), a debug-log f-string and its own
    Noise `send_all`. Ours cuts up to WRITE_BATCH frames' worth, as far as the send window
    allows, under one pass through those locks and hands them to Noise as one write. The
    frames are the same; small writes and a stream out of window take py-libp2p's path
    (which waits for credit)."""
    import struct

    from libp2p.stream_muxer.exceptions import MuxedStreamError
    from libp2p.stream_muxer.yamux import yamux

    pack = struct.Struct(yamux.YAMUX_HEADER_FORMAT).pack
    max_payload = yamux.MAX_MESSAGE_SIZE - yamux.HEADER_SIZE  # as py-libp2p cuts frames
    original_write = yamux.YamuxStream.write

    async def write(self: Any, data: bytes) -> None:
        total = len(data)
        if total <= max_payload:
            await original_write(self, data)
            return
        view = memoryview(data)
        sent = 0
        while sent < total:
            if self.send_closed:
                raise MuxedStreamError("Stream is closed for sending")
            parts: list[bytes | memoryview] = []
            async with self.rw_lock.write_lock():
                if self.send_closed:
                    raise MuxedStreamError("Stream is closed for sending")
                async with self.window_lock:
                    if self.closed:
                        raise MuxedStreamError("Stream is closed")
                    budget = min(self.send_window, WRITE_BATCH * max_payload, total - sent)
                    if budget > 0:
                        self.send_window -= budget
                        for off in range(sent, sent + budget, max_payload):
                            n = min(max_payload, sent + budget - off)
                            parts.append(pack(0, yamux.TYPE_DATA, 0, self.stream_id, n))
                            parts.append(view[off:off + n])
            if not parts:  # out of window: py-libp2p's write waits for credit, then sends a frame
                step = min(max_payload, total - sent)
                await original_write(self, bytes(view[sent:sent + step]))
                sent += step
                continue
            await self.conn._write_frame(b"".join(parts))
            sent += budget

    yamux.YamuxStream.write = write  # type: ignore[method-assign]


def connection_bytes(conn: Any) -> tuple[int, int]:
    """(received, sent) bytes on a connection's wire since its Noise handshake, as counted
    by the patched transport; (0, 0) for a connection without one."""
    transport = conn
    for attr in ("muxed_conn", "secured_conn", "conn"):
        transport = getattr(transport, attr, None)
        if transport is None:
            return 0, 0
    counts = getattr(transport, "__dict__", {})
    return int(counts.get("_punch_in", 0)), int(counts.get("_punch_out", 0))


async def grow_receive_window(stream: INetStream, size: int) -> bool:
    """Open a yamux stream's receive window to `size` at once, with one WINDOW_UPDATE.

    py-libp2p starts a stream at yamux's 256 KiB and doubles the window only while window
    updates come within 4 RTTs of each other; once it has measured a loopback RTT (~0.1 ms)
    it stops growing (we saw streams stay at 256 KiB–4 MiB), and a sender out of window
    polls every 10 ms. Granting go-yamux's cap (16 MiB) up front keeps a bulk stream's pipe
    full. Returns False (and does nothing) when the stream is not a py-libp2p yamux stream.
    """
    muxed = getattr(stream, "muxed_stream", None)
    if muxed is None or not all(hasattr(muxed, a) for a in ("target_recv_window", "recv_window", "window_lock")):
        return False
    async with muxed.window_lock:
        delta = size - muxed.target_recv_window
        if delta <= 0:
            return True
        muxed.target_recv_window = size
        muxed.recv_window += delta
    await muxed.send_window_update(delta, skip_lock=True)
    return True
