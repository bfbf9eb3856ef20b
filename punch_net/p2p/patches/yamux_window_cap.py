"""A peer that sends faster than we read makes a yamux stream buffer up to 16 MiB.

Bug: py-libp2p's yamux auto-tuning doubles a stream's receive window (256 KiB → 16 MiB)
while the reader keeps up, and the window stays large when the reader stops; a server that
stops reading a stream (backpressure) still buffers 16 MiB of it per stream, so 20
non-reading peers cost 320 MiB before any limit can act.
The window grows while multistream-select negotiates, before any protocol handler could
cap it (measured: 4 MiB by the time the handler ran), so the cap is set per direction.
Fix: an inbound stream (one a peer opened on us) never auto-grows its window past
`INBOUND_WINDOW_CAP` (yamux's initial 256 KiB), so what a peer can push ahead of our reads
is bounded; outbound streams keep py-libp2p's auto-tuning, and `cap_receive_window`
sets any stream's cap (None: no cap). An explicit `grow_receive_window` still applies.
Process-wide wrap of `YamuxStream._apply_autotune_epoch`; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/stream_muxer/yamux/yamux.py#L380
(`_apply_autotune_epoch`); no upstream issue found.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import INetStream
from libp2p.stream_muxer.yamux import yamux

ORIGINAL_AUTOTUNE = yamux.YamuxStream._apply_autotune_epoch
INBOUND_WINDOW_CAP = 256 * 1024
_CAP = "_punch_window_cap"
_UNSET = object()


def install() -> None:
    if yamux.YamuxStream._apply_autotune_epoch is not ORIGINAL_AUTOTUNE:
        return

    def apply_autotune_epoch(self: Any, buffered: int) -> int:
        cap = getattr(self, _CAP, _UNSET)
        if cap is _UNSET:
            cap = None if self.is_initiator else INBOUND_WINDOW_CAP
        if cap is not None and self.target_recv_window >= cap:
            return 0  # at the cap: no doubling, no extra window
        return int(ORIGINAL_AUTOTUNE(self, buffered))

    yamux.YamuxStream._apply_autotune_epoch = apply_autotune_epoch  # type: ignore[method-assign]


def cap_receive_window(stream: INetStream, cap: int | None) -> bool:
    """Never let `stream`'s receive window auto-grow past `cap` bytes (None: py-libp2p's
    auto-tuning, up to 16 MiB). False (nothing done) when it is not a py-libp2p yamux stream."""
    muxed = getattr(stream, "muxed_stream", None)
    if muxed is None or not hasattr(muxed, "target_recv_window"):
        return False
    setattr(muxed, _CAP, cap)
    return True
