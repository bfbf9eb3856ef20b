"""py-libp2p writes a large yamux write one 64 KiB frame, three locks and one Noise write
at a time.

Bug (speed): `YamuxStream.write` cuts a large write into frames and sends each under three
locks (two of them yielding to the scheduler), with a debug-log f-string and its own Noise
`send_all`. Fix: cut up to WRITE_BATCH frames' worth, as far as the send window allows,
under one pass through those locks and hand them to Noise as one write. The frames are the
same; small writes and a stream out of window take py-libp2p's path (which waits for
credit). Process-wide; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/stream_muxer/yamux/yamux.py#L229;
no upstream issue found.
"""

from __future__ import annotations

import struct
from typing import Any

from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.yamux import yamux

WRITE_BATCH = 4  # yamux frames per Noise write at most: 256 KiB, so other streams' frames wait little
ORIGINAL_WRITE = yamux.YamuxStream.write


def install() -> None:
    if yamux.YamuxStream.write is not ORIGINAL_WRITE:
        return
    pack = struct.Struct(yamux.YAMUX_HEADER_FORMAT).pack
    max_payload = yamux.MAX_MESSAGE_SIZE - yamux.HEADER_SIZE  # as py-libp2p cuts frames
    original_write = ORIGINAL_WRITE

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
