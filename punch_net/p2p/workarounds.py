"""Every py-libp2p 0.8.1 bug Punch works around, in one place.

Each function names the bug, the upstream tracker entry, and is covered by
tests/integration/test_workarounds.py, which shows the bug and the fix.
Upstream: https://github.com/libp2p/py-libp2p (issues referenced per function).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

KAD_READ_DEADLINE = 10.0  # seconds one inbound kad read may wait
KAD_STREAMS_PER_PEER = 4  # concurrent inbound kad streams one peer may hold


class DeadlineStream:
    """A stream whose every read fails after `deadline` seconds without data.

    py-libp2p's kad server reads with no timeout and handles at most 12 streams at
    once (kad_dht.py `_do_handle_stream`), so 12 silent streams starve every honest
    peer. With a deadline the read raises, the handler resets the stream and frees
    its slot. Upstream: libp2p/py-libp2p "Kad-DHT inbound stream handler has no read
    timeout" (see docs/ARCHITECTURE.md, Workarounds).
    """

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
            await _reset_quietly(stream)
            return
        active[peer] += 1
        try:
            await handle_stream(DeadlineStream(stream, deadline))  # type: ignore[arg-type]
        finally:
            active[peer] -= 1
            if active[peer] <= 0:
                del active[peer]

    host.set_stream_handler(KAD_PROTOCOL, guarded)


async def _reset_quietly(stream: INetStream) -> None:
    try:
        await stream.reset()
    except Exception:
        pass


def dedupe_providers(providers: Iterable[PeerInfo]) -> list[PeerInfo]:
    """`find_providers` can return one provider twice; merge them by peer id, keeping addrs."""
    merged: dict[ID, PeerInfo] = {}
    for info in providers:
        if info.peer_id in merged:
            known = merged[info.peer_id].addrs
            known.extend(a for a in info.addrs if a not in known)
        else:
            merged[info.peer_id] = PeerInfo(info.peer_id, list(info.addrs))
    return list(merged.values())


async def learn_peer_id(host: IHost, addr: multiaddr.Multiaddr) -> ID:
    """Find who listens at `addr` with a Noise handshake that expects no particular peer.

    `host.connect()` needs a peer id, but users type bootstrap addresses without
    `/p2p/` (the seed's default is `/ip4/127.0.0.1/tcp/51820`). Noise XX tells us the
    responder's identity; we close that probe and dial normally. Callers put a deadline
    around this.
    """
    swarm: Any = host.get_network()
    transport = swarm.transport_manager.transport_for_dialing(addr)
    if transport is None:
        raise OSError(f"no transport can dial {addr}")
    raw = await transport.dial(addr)
    try:
        secure = await swarm.upgrader.security_multistream.secure_outbound(raw, None)
    except BaseException:
        await raw.close()
        raise
    try:
        return secure.get_remote_peer()
    finally:
        await secure.close()


def quiet_libp2p_logging(level: int = logging.CRITICAL) -> None:
    """py-libp2p logs expected peer failures (reset streams, EOFs) as warnings/errors
    on stderr; Punch reports what matters through its own events instead."""
    logging.getLogger("libp2p").setLevel(level)
    logging.getLogger("multiaddr").setLevel(level)
