"""py-libp2p's Noise transport makes a scheduler trip per 2-byte length and per body, and
one `send_all` per Noise message.

Bug (speed): the post-handshake reader does a 2-byte `recv` for each message's length and
one or more `recv`s for its body; the writer sends each Noise message of a large write with
its own `send_all`. On loopback that per-message Python work, not the wire, bounds a stream.
Fix (same wire format): the reader receives up to 256 KiB per `recv`, cuts Noise messages
out of its own buffer and decrypts them in place (the handshake reader is untouched, so
nothing it reads can be over-read); a large write is encrypted into all its messages and
sent with one `send_all`. It also counts the wire bytes per connection (`_punch_in`,
`_punch_out`; read by `punch_net.p2p.helpers.connection_bytes`). Process-wide; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/security/noise/io.py#L59
(`write_msg`) and #L81 (`read_msg`);
no upstream issue found.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidTag
from libp2p.io.exceptions import IncompleteReadError
from libp2p.security.noise import io as noise_io
from noise.exceptions import NoiseInvalidMessage

RAW_READ = 256 * 1024  # bytes asked of the socket per recv
NOISE_OVERHEAD = 2 + 16  # length prefix and Poly1305 tag around each Noise message
ORIGINAL_READ_MSG = noise_io.NoiseTransportReadWriter.read_msg
ORIGINAL_WRITE_MSG = noise_io.NoiseTransportReadWriter.write_msg


def install() -> None:
    cls = noise_io.NoiseTransportReadWriter
    if cls.read_msg is not ORIGINAL_READ_MSG:
        return
    limit = noise_io.MAX_PLAINTEXT_LENGTH
    original_write = ORIGINAL_WRITE_MSG

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
