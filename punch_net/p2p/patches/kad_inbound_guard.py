"""~12 silent kad streams block a DHT server for every honest peer.

Bug: the kad server reads with no timeout and handles at most 12 inbound streams at once
(`KadDHT._do_handle_stream`, `_inbound_limiter`), so 12 stalled streams starve everyone.
Fix: re-register the kad handler with a per-read deadline (the read raises, the handler
resets the stream and frees its slot) and a per-peer cap (over-limit streams are reset at
once). Installed for DHT servers only, per host.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/kad_dht.py#L323
and #L627; no upstream issue found (js-libp2p fixed
the same in https://github.com/libp2p/js-libp2p/pull/3167).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.id import ID

from punch_net.p2p.streams import reset_quietly

KAD_READ_DEADLINE = 10.0  # seconds one inbound kad read may wait
KAD_STREAMS_PER_PEER = 4  # concurrent inbound kad streams one peer may hold


class DeadlineStream:
    """A stream whose every read fails after `deadline` seconds without data."""

    def __init__(self, stream: INetStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    async def read(self, n: int | None = None) -> bytes:
        with trio.fail_after(self._deadline):
            return await self._stream.read(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install_kad_read_deadline(
    host: IHost,
    handle_stream: Callable[[INetStream], Awaitable[None]],
    deadline: float = KAD_READ_DEADLINE,
    per_peer: int = KAD_STREAMS_PER_PEER,
) -> None:
    """Re-register the kad handler with a per-read deadline and a per-peer stream cap."""
    active: Counter[ID] = Counter()

    async def guarded(stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if active[peer] >= per_peer:
            await reset_quietly(stream)
            return
        active[peer] += 1
        try:
            await handle_stream(DeadlineStream(stream, deadline))  # type: ignore[arg-type]
        finally:
            active[peer] -= 1
            if active[peer] <= 0:
                del active[peer]

    host.set_stream_handler(KAD_PROTOCOL, guarded)
