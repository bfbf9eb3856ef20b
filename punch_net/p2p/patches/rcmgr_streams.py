"""3 throwaway identities × 4 silent kad streams make every honest FIND_NODE fail.

Bug: `KadDHT.handle_stream` serves at most 12 inbound streams at once (`_inbound_limiter`,
node-wide) and resets the 13th at once; with the read deadline and per-peer cap of
`kad_inbound_guard`, 3 identities × 4 silent streams still hold all 12 slots, so an honest
peer's stream is reset ("failed to open a stream") as long as the attack lasts.
Fix: inbound kad and command streams are admitted by `punch_net.rcmgr` (system, per peer,
per protocol, per protocol and peer, per protocol and source IP: identities are free, IP
addresses are not), refused at once (reset) over a limit, and given a short first-byte
deadline so a silent stream costs a slot for seconds; the kad limiter of 12 is raised to
our per-protocol limit so the manager is the one that decides.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/kad_dht.py#L323
and #L576; no upstream issue found.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL

from punch_net.p2p.patches.rcmgr_conn_gate import remote_endpoint
from punch_net.p2p.streams import reset_quietly
from punch_net.rcmgr import Refusal, ResourceManager


class FirstByteStream:
    """A stream whose first read fails after `first_byte` seconds without data and whose
    later reads (if `per_read` is set) after `per_read` seconds each."""

    def __init__(self, stream: INetStream, first_byte: float, per_read: float | None = None) -> None:
        self._stream = stream
        self._first_byte = first_byte
        self._per_read = per_read
        self._got_data = False

    async def read(self, n: int | None = None) -> bytes:
        deadline = self._per_read if self._got_data else self._first_byte
        if deadline is None:
            return await self._stream.read(n)
        with trio.fail_after(deadline):
            data = await self._stream.read(n)
        self._got_data = self._got_data or bool(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_handler(
    rcmgr: ResourceManager,
    protocol: str,
    handler: Callable[[INetStream], Awaitable[None]],
    per_read: float | None = None,
) -> Callable[[INetStream], Awaitable[None]]:
    """`handler` behind the manager's inbound stream limits and a first-byte deadline."""

    async def guarded(stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        endpoint = remote_endpoint(stream)
        reservation = rcmgr.reserve_stream(protocol, peer, endpoint[0] if endpoint else "")
        if isinstance(reservation, Refusal):
            await reset_quietly(stream)
            return
        try:
            wrapped = FirstByteStream(stream, rcmgr.limits.first_byte_timeout, per_read)
            await handler(wrapped)  # type: ignore[arg-type]
        finally:
            reservation.release()

    return guarded


def install_kad(host: IHost, dht: Any, rcmgr: ResourceManager, per_read: float) -> None:
    """Serve kad through the manager (DHT servers; before the host runs)."""
    dht._inbound_limiter.total_tokens = rcmgr.limits.streams_per_protocol
    host.set_stream_handler(KAD_PROTOCOL, guard_handler(rcmgr, str(KAD_PROTOCOL), dht.handle_stream, per_read))
