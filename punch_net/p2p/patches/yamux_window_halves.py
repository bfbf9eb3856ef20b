"""A py-libp2p yamux stream sends a WINDOW_UPDATE for every read, however large its window.

Bug (speed): `YamuxStream._auto_tune_and_send_window_update` means to hold updates back
until half the window target is consumed (go-yamux's hysteresis), but its partial-slack
branch and `PY_YAMUX_RELEASE_ON_READ` (on by default) send one for the bytes of every read
anyway: a 256 MiB loopback torrent download, ~390 reads, sent ~390 encrypted 12-byte
frames (a `send` syscall each), which the server decrypts and handles in py-libp2p's slow
per-frame loop; the serving side sends one for every read of a few REQUESTs.
Fix: a stream marked with `release_in_halves` (bulk transfers mark theirs) sends an
update only once at least half of its window target has been read and not yet given back,
as go-yamux does. The sender then always holds at least half the window as credit (with
the 16 MiB a download grants: 8 MiB), and a reader that stops reading still stops it.
Unmarked streams keep py-libp2p's behaviour. Process-wide wrap; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/stream_muxer/yamux/yamux.py#L410
(`_auto_tune_and_send_window_update`); no upstream issue found.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import INetStream
from libp2p.stream_muxer.yamux import yamux

ORIGINAL_AUTO_TUNE = yamux.YamuxStream._auto_tune_and_send_window_update
_FLAG = "_punch_release_in_halves"


def install() -> None:
    if yamux.YamuxStream._auto_tune_and_send_window_update is not ORIGINAL_AUTO_TUNE:
        return
    original = ORIGINAL_AUTO_TUNE

    async def auto_tune_and_send_window_update(self: Any, *, bytes_read: int = 0) -> None:
        if not getattr(self, _FLAG, False):
            await original(self, bytes_read=bytes_read)
            return
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            # read and not yet given back: what the peer lacks of the full window
            delta = self.target_recv_window - (self.recv_window + buffered)
            if delta <= 0 or delta < self.target_recv_window // 2:
                return
            self.recv_window += delta
            self._pending_recv_release = 0
        await self.send_window_update(delta, skip_lock=True)  # never under window_lock (py-libp2p's rule)

    yamux.YamuxStream._auto_tune_and_send_window_update = auto_tune_and_send_window_update  # type: ignore[method-assign]


def release_in_halves(stream: INetStream) -> bool:
    """Send `stream`'s window updates only once half its window has been read (call it
    before reading). False (nothing done) when it is not a py-libp2p yamux stream."""
    muxed = getattr(stream, "muxed_stream", None)
    if muxed is None or not all(hasattr(muxed, a) for a in ("target_recv_window", "recv_window", "window_lock")):
        return False
    setattr(muxed, _FLAG, True)
    return True
