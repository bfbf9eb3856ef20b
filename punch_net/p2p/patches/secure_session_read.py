"""py-libp2p's secured session copies every Noise message through a BytesIO.

Bug (speed): `SecureSession.read` writes each message into an `io.BytesIO` and copies the
part asked for out of it, even when the read wants the whole message; yamux reads every
12-byte header and every body this way. Fix: keep what is left of the last message as
(message, offset); a read that wants a whole message gets it without a copy, one that
spans messages copies once. Process-wide; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/security/secure_session.py#L95;
no upstream issue found.
"""

from __future__ import annotations

from typing import Any

from libp2p.io.exceptions import ConnectionClosedError
from libp2p.security.secure_session import SecureSession

ORIGINAL_READ = SecureSession.read


async def read_parts(self: Any, n: int) -> list[bytes | memoryview]:
    """Up to `n` bytes (fewer only at end of stream) as the pieces of the Noise messages
    they came in, not joined: yamux's fast DATA path extends a stream buffer with them
    (one copy where a joined read would be two)."""
    msg, off = self.__dict__.get("_punch_pending", (b"", 0))
    left = len(msg) - off
    if left >= n:
        self._punch_pending = (msg, off + n)
        return [msg if off == 0 and n == len(msg) else memoryview(msg)[off:off + n]]
    parts: list[bytes | memoryview] = [memoryview(msg)[off:]] if left else []
    got = left
    self._punch_pending = (b"", 0)
    while got < n:
        nxt: bytes = await self.conn.read_msg()
        if nxt == b"":
            if parts:
                return parts
            raise ConnectionClosedError("Connection closed")
        need = n - got
        if len(nxt) <= need:
            parts.append(nxt)
            got += len(nxt)
        else:
            parts.append(memoryview(nxt)[:need])
            got = n
            self._punch_pending = (nxt, need)
    return parts


def install() -> None:
    if SecureSession.read is not ORIGINAL_READ:
        return

    async def read(self: Any, n: int | None = None) -> bytes:
        """As SecureSession.read: n=None -> what is buffered or the next message;
        otherwise exactly n bytes (fewer only at end of stream). What is left of the last
        message is kept as (message, offset): a read that spans messages copies once."""
        if n == 0:
            return b""
        if n is None:
            msg, off = self.__dict__.get("_punch_pending", (b"", 0))
            if len(msg) > off:
                self._punch_pending = (b"", 0)
                return msg if off == 0 else msg[off:]
            nxt: bytes = await self.conn.read_msg()
            if nxt == b"":
                raise ConnectionClosedError("Connection closed")
            return nxt
        parts = await read_parts(self, n)
        first = parts[0]
        return first if len(parts) == 1 and isinstance(first, bytes) else b"".join(parts)

    SecureSession.read = read  # type: ignore[method-assign]


def patched(reader: object) -> bool:
    """Whether `reader` is a secured session whose reads go through this patch."""
    return isinstance(reader, SecureSession) and SecureSession.read is not ORIGINAL_READ
