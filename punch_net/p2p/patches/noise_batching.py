"""py-libp2p's Noise transport makes a scheduler trip per 2-byte length and per body, and
one `send_all` per Noise message.

Bug (speed): the post-handshake reader does a 2-byte `recv` for each message's length and
one or more `recv`s for its body; the writer sends each Noise message of a large write with
its own `send_all`. On loopback that per-message Python work, not the wire, bounds a stream.
Fix (same wire format): the reader receives up to 256 KiB per `recv` (on plain TCP with
`recv_into`, straight into its own fixed buffer), cuts Noise messages out of that buffer
and decrypts them in place (the handshake reader is untouched, so
nothing it reads can be over-read); a large write is encrypted into all its messages and
sent with one `send_all`. It also counts the wire bytes per connection (`_punch_in`,
`_punch_out`; read by `punch_net.p2p.helpers.connection_bytes`). Process-wide; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/security/noise/io.py#L59
(`write_msg`) and #L81 (`read_msg`);
no upstream issue found.
"""

from __future__ import annotations

import errno
from typing import Any

import trio
from cryptography.exceptions import InvalidTag
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.security.noise import io as noise_io
from noise.exceptions import NoiseInvalidMessage

RAW_READ = 256 * 1024  # bytes asked of the socket per recv
BUFFER = RAW_READ + 2 + 65_535  # a recv's worth after the most a partial message can hold
NOISE_OVERHEAD = 2 + 16  # length prefix and Poly1305 tag around each Noise message
ORIGINAL_READ_MSG = noise_io.NoiseTransportReadWriter.read_msg
ORIGINAL_WRITE_MSG = noise_io.NoiseTransportReadWriter.write_msg


class _ReadBuffer:
    """One connection's received bytes, [start, end) of a fixed buffer that a plain TCP
    connection's socket receives into directly (no bytes object per recv, no copy into
    the buffer); other connections read as py-libp2p does and are copied in."""

    def __init__(self, sock: trio.socket.SocketType | None) -> None:
        self.buf = bytearray(BUFFER)
        self.start = self.end = 0
        self.sock = sock

    async def fill(self, raw: Any) -> int:
        """Receive more after what is buffered; 0 at end of stream."""
        buf, start, end = self.buf, self.start, self.end
        if start == end:
            start = end = self.start = self.end = 0
        elif BUFFER - end < RAW_READ:  # move the partial message to the front (under 64 KiB)
            buf[:end - start] = buf[start:end]
            self.start, self.end = 0, end - start
            end -= start
        if self.sock is None:
            data: bytes = await raw.read(min(RAW_READ, BUFFER - end))
            buf[end:end + len(data)] = data
            self.end += len(data)
            return len(data)
        with memoryview(buf) as view:
            try:
                got: int = await self.sock.recv_into(view[end:end + RAW_READ])
            except trio.ClosedResourceError:
                got = 0
            except OSError as exc:  # as trio's SocketStream and py-libp2p's TCP stream map them
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    got = 0
                else:
                    raise ConnectionClosedError(f"TCP connection reset by remote peer: {exc}",
                                                transport="tcp") from exc
        self.end += got
        return got


def _socket_of(raw: Any) -> trio.socket.SocketType | None:
    """The trio socket under py-libp2p's plain TCP connection, else None."""
    tcp = getattr(raw, "stream", None) if isinstance(raw, RawConnection) else None
    stream = getattr(tcp, "stream", None) if isinstance(tcp, TrioTCPStream) else None
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def install() -> None:
    cls = noise_io.NoiseTransportReadWriter
    if cls.read_msg is not ORIGINAL_READ_MSG:
        return
    limit = noise_io.MAX_PLAINTEXT_LENGTH
    original_write = ORIGINAL_WRITE_MSG

    async def read_msg(self: Any, prefix_encoded: bool = False) -> bytes:
        state: _ReadBuffer | None = self.__dict__.get("_punch_rbuf")
        if state is None:
            state = self._punch_rbuf = _ReadBuffer(_socket_of(self.read_writer.read_write_closer))
        buf = state.buf
        while True:
            start, have = state.start, state.end - state.start
            if have >= 2:
                end = start + 2 + ((buf[start] << 8) | buf[start + 1])
                if end <= state.end:
                    state.start = end
                    if prefix_encoded:
                        return self.decrypt(bytes(buf[start + 2 + len(self.prefix):end]))  # type: ignore[no-any-return]
                    cipher = self.noise_state.noise_protocol.cipher_state_decrypt
                    with memoryview(buf) as view:
                        try:  # straight from our buffer: noise's own decrypt() wants a bytes copy
                            result: bytes = cipher.decrypt_with_ad(None, view[start + 2:end])
                        except InvalidTag:
                            raise NoiseInvalidMessage("Failed authentication of message") from None
                    return result
            got = await state.fill(self.read_writer.read_write_closer)
            self._punch_in = self.__dict__.get("_punch_in", 0) + got
            if not got:
                raise IncompleteReadError(
                    f"Connection closed during read operation: {have} bytes of a Noise message",
                    expected_bytes=2, received_bytes=have)

    async def write_msg(self: Any, msg: bytes, prefix_encoded: bool = False) -> None:
        if prefix_encoded or len(msg) <= limit:
            await original_write(self, msg, prefix_encoded)
            self._punch_out = self.__dict__.get("_punch_out", 0) + len(msg) + NOISE_OVERHEAD
            return
        view = memoryview(msg)
        parts: list[bytes] = []
        # straight from the caller's bytes: noise's own encrypt() wants a bytes copy of each message
        cipher = self.noise_state.noise_protocol.cipher_state_encrypt
        for off in range(0, len(msg), limit):
            encrypted = cipher.encrypt_with_ad(None, view[off:off + limit])
            parts.append(len(encrypted).to_bytes(2, "big"))
            parts.append(encrypted)
        wire = b"".join(parts)
        await self.read_writer.read_write_closer.write(wire)
        self._punch_out = self.__dict__.get("_punch_out", 0) + len(wire)

    cls.read_msg = read_msg  # type: ignore[method-assign]
    cls.write_msg = write_msg  # type: ignore[method-assign]
