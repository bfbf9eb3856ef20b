"""Silent inbound streams, of any protocol or of none yet, starve a node's honest peers.

Bug 1 (kad): `KadDHT.handle_stream` serves at most 12 inbound streams at once
(`_inbound_limiter`, node-wide) and resets the 13th at once; with a read deadline and a
per-peer cap, 3 throwaway identities × 4 silent kad streams still hold all 12 slots.
Bug 2 (every other protocol): the host hands each negotiated inbound stream to its
handler with no limit at all (`BasicHost._swarm_stream_handler`): one peer holds as many
silent ping, identify-push, DCUtR, relay or torrent streams as it opens, each until that
handler's own timeout (ping 10 s, torrent 120 s), and AutoNAT's handler reads with no
deadline, so its silent streams are held forever.
Bug 3 (no protocol yet): a stream that never finishes multistream-select is held for the
swarm's inbound negotiation timeout (10 s), and there is no limit on how many: a peer that
opens yamux streams and says nothing holds a task and a stream for each.
Fix: the swarm's inbound stream handler is replaced (`swarm.set_stream_handler`, what
BasicHost itself does) by one that follows go-libp2p's resource manager: a stream takes a
transient reservation in `punch_net.rcmgr` (node, peer, IP) while it negotiates, within
`negotiation_timeout`; then a stream reservation for the protocol it chose (system, peer,
protocol, protocol×peer, protocol×IP: identities are free, addresses are not; the
per-protocol figures in `rcmgr.limits.PROTOCOL_LIMITS`). Over any limit the stream is
reset at once, never queued. Where the client speaks first (kad, command, torrent,
AutoNAT) its first read must come within `first_byte_timeout`. The reservation is given
back when the handler returns, which is when py-libp2p itself ends an inbound stream
(`SwarmConn._handle_muxed_stream`). The kad limiter of 12 is raised so the manager decides.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/host/basic_host.py#L1480
(`_swarm_stream_handler`), kad_dht.py#L323 and #L576; no upstream issue found.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.protocol_muxer.exceptions import MultiselectError
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator

from punch_net.p2p.patches.rcmgr_conn_gate import remote_endpoint
from punch_net.p2p.streams import reset_quietly
from punch_net.rcmgr import Refusal, ResourceManager


class FirstByteStream:
    """A stream whose first read fails after `first_byte` seconds without data and whose
    later reads (if `per_read` is set) after `per_read` seconds each."""

    def __init__(self, stream: INetStream, first_byte: float | None, per_read: float | None = None) -> None:
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


def install(host: IHost, rcmgr: ResourceManager) -> None:
    """Admit every inbound stream of `host` through `rcmgr` (before the host runs)."""
    swarm: Any = host.get_network()
    if getattr(swarm, "_punch_streams_gated", False):
        return
    swarm._punch_streams_gated = True
    mux = host.get_mux()
    lim = rcmgr.limits

    async def gated(stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        endpoint = remote_endpoint(stream)
        ip = endpoint[0] if endpoint else ""
        negotiating = rcmgr.reserve_negotiation(peer, ip)
        if isinstance(negotiating, Refusal):
            await reset_quietly(stream)
            return
        protocol, handler = None, None
        try:
            with trio.move_on_after(lim.negotiation_timeout):
                # multiselect's own deadline is an int of seconds: ours (above) is the one that counts
                protocol, handler = await mux.negotiate(MultiselectCommunicator(stream),
                                                        math.ceil(lim.negotiation_timeout) + 1)
        except MultiselectError:
            pass
        finally:
            negotiating.release()
        if protocol is None or handler is None:
            await reset_quietly(stream)
            return
        stream.set_protocol(protocol)
        reservation = rcmgr.reserve_stream(str(protocol), peer, ip)
        if isinstance(reservation, Refusal):
            await reset_quietly(stream)
            return
        try:
            spec = rcmgr.protocol_limits(str(protocol))
            if spec.first_byte:
                every = lim.first_byte_timeout if spec.every_read else None
                await handler(FirstByteStream(stream, lim.first_byte_timeout, every))  # type: ignore[arg-type]
            else:
                await handler(stream)
        finally:
            reservation.release()

    swarm.set_stream_handler(gated)


def install_kad(host: IHost, dht: Any, rcmgr: ResourceManager, per_read: float) -> None:
    """Serve kad through the manager (DHT servers; before the host runs): the gate above
    admits its streams and times their first byte; each later read gets `per_read`."""
    install(host, rcmgr)
    dht._inbound_limiter.total_tokens = rcmgr.protocol_limits(str(KAD_PROTOCOL)).streams
    handle_stream: Callable[[INetStream], Awaitable[None]] = dht.handle_stream

    async def later_reads_bounded(stream: INetStream) -> None:
        # the gate's FirstByteStream bounds the first read; this bounds every read
        await handle_stream(FirstByteStream(stream, per_read, per_read))  # type: ignore[arg-type]

    host.set_stream_handler(KAD_PROTOCOL, later_reads_bounded)
