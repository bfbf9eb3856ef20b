"""Small helpers for py-libp2p streams, used by every protocol adapter."""

from __future__ import annotations

from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

READ_CHUNK = 64 * 1024


async def read_some(stream: INetStream, n: int = READ_CHUNK) -> bytes:
    """One read; b"" at a clean end of stream (py-libp2p raises StreamEOF instead)."""
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


async def reset_quietly(stream: INetStream) -> None:
    """Reset a stream we are giving up on; it may be gone already, which is fine."""
    try:
        await stream.reset()
    except Exception:
        pass
