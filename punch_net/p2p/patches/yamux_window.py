"""A py-libp2p yamux stream's receive window stops growing on a fast link.

Bug (speed): a stream starts at yamux's 256 KiB and doubles its window only while window
updates come within 4 RTTs of each other; once it has measured a loopback RTT (~0.1 ms) it
stops growing (we saw streams stay at 256 KiB–4 MiB), and a sender out of window polls
every 10 ms. Fix (per stream, called by bulk transfers): grant go-yamux's cap (16 MiB) up
front with one WINDOW_UPDATE.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/stream_muxer/yamux/yamux.py
(`YamuxStream` window auto-tuning);
no upstream issue found (later yamux window work upstream:
https://github.com/libp2p/py-libp2p/pull/1337).
"""

from __future__ import annotations

from libp2p.abc import INetStream


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
