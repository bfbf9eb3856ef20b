"""A circuit relay v2 hop reserves a slot for whichever peer the RESERVE message names.

Bug: `CircuitV2Protocol._handle_reserve` takes the reserving peer from the optional
`msg.peer` field and only falls back to the connection's peer, so any peer can make (or
refresh) a reservation in another peer's name. Fix: the field is cleared, the reservation is
for the authenticated peer of the connection.

The class is also the one place Punch reaches into the hop's private methods: the relay
service (punch_net/relay/service.py: per-IP and total caps, bookkeeping) overrides the
public hooks below instead of `_handle_reserve` / `_handle_connect` / `_relay_data`, and
reads reservations through `reservations()` instead of the resource manager's private dict.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/relay/circuit_v2/protocol.py#L504
(peer taken from msg.peer at #L510);
no upstream issue found.

Bug 2 (issue 14 point 8, docs/NAT.md): `_handle_connect` files a circuit's streams in
`_active_relays` under the *destination* peer id, and `_relay_data`'s cleanup closes whatever
is filed under the peer id it was given. With several circuits to one peer (five dialers
reaching one listener), the newest circuit overwrites the others' entry, and the end of
*any* circuit to that peer (a dialer leaving, the relayed leg closed after a hole punch)
closes the newest circuit, another dialer's: its next read or multistream-select fails.
The source's own leg, filed as (stream, None), is never closed towards the source.
Fix: the copy loop below closes the two streams of its own circuit and drops only
registry entries that hold them. It also ends at once on a clean EOF (the library retried
StreamEOF as an "unexpected error" for 0.6 s), resets rather than writing a HopMessage
into a circuit that carries the peers' encrypted bytes when a cap is hit (the duration
cap on an idle circuit too: the library checked it only between reads), and treats a
data cap of 0 as unlimited (the library then fell back to the reservation's cap of 0 and
cut the circuit at its first byte from the reserved peer).
Where: libp2p/relay/circuit_v2/protocol.py of the installed 0.8.1, `_handle_connect`
(`self._active_relays[peer_id] = (stream, dst_stream)`) and the `finally` of `_relay_data`;
no upstream issue found. Tests: tests/integration/test_relay_circuits.py (bug, then fix)
and tests/e2e/test_nat_concurrent.py (five dialers at once on the NAT rig).
"""

from __future__ import annotations

import math
import time
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.tools.constants import MAX_READ_LEN

from punch_net.p2p.streams import read_some

ORIGINAL_HANDLE_RESERVE = CircuitV2Protocol._handle_reserve


class PatchedCircuitV2(CircuitV2Protocol):
    """CircuitV2Protocol with the reservation fix and public hooks for subclasses."""

    # ------------------------------------------------------------ hooks for subclasses

    async def handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        """A RESERVE request; the default is the library's handling (with the fix)."""
        await self.library_reserve(stream, msg)

    async def handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        """A CONNECT request; the default is the library's handling."""
        await self.library_connect(stream, msg)

    async def relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,
                         deadline: float | None = None, circuit_data_limit: list[int] | None = None) -> None:
        """Copy one direction of a circuit; the default is the library's copy loop.
        `circuit_data_limit` is the library's shared [bytes left] budget of the circuit."""
        await self.library_relay_data(src_stream, dst_stream, peer_id, deadline, circuit_data_limit)

    def reservations(self) -> dict[ID, Any]:
        """The resource manager's reservations (objects with created_at, expires_at,
        is_expired()), read from its private dict: it has no public accessor."""
        return dict(self.resource_manager._reservations)

    # ------------------------------------------------------------ the library's behaviour

    async def library_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        msg.ClearField("peer")  # the fix: reserve for the authenticated peer only
        await ORIGINAL_HANDLE_RESERVE(self, stream, msg)

    async def library_connect(self, stream: INetStream, msg: HopMessage) -> None:
        try:
            await CircuitV2Protocol._handle_connect(self, stream, msg)
        finally:
            self._forget_streams(stream)  # a refused CONNECT leaves (stream, None) filed too

    async def library_relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,
                                 deadline: float | None = None,
                                 circuit_data_limit: list[int] | None = None) -> None:
        """The library's copy loop for one direction of a circuit, with the fix (bug 2):
        its end closes this circuit's two streams, never another circuit's."""
        # the duration cap also ends an idle circuit (the library only checked it between reads)
        cap_at = trio.current_time() + (deadline - time.monotonic()) if deadline is not None else math.inf
        try:
            while True:
                data = None
                with trio.move_on_at(cap_at):
                    try:
                        data = await read_some(src_stream, MAX_READ_LEN)
                    except Exception:
                        return  # reset, or the connection under it went away
                if data is None:
                    await self._reset_both(src_stream, dst_stream)  # duration cap
                    return
                if not data:
                    return
                if circuit_data_limit is not None:
                    if len(data) > circuit_data_limit[0]:
                        circuit_data_limit[0] = 0
                        await self._reset_both(src_stream, dst_stream)  # data cap
                        return
                    circuit_data_limit[0] -= len(data)
                try:
                    with trio.fail_after(self.write_timeout):
                        await dst_stream.write(data)
                except Exception:
                    return
        finally:
            self._forget_streams(src_stream, dst_stream)
            with trio.CancelScope(shield=True):
                await self._close_stream(src_stream)
                await self._close_stream(dst_stream)

    async def _reset_both(self, a: INetStream, b: INetStream) -> None:
        for stream in (a, b):
            try:
                await stream.reset()
            except Exception:
                pass

    def _forget_streams(self, *streams: INetStream) -> None:
        """Drop the `_active_relays` entries (keyed by peer, not by circuit) holding these streams."""
        for key, pair in list(self._active_relays.items()):
            if any(s is mine for s in pair for mine in streams):
                del self._active_relays[key]

    # ------------------------------------------------------------ the overrides

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        await self.handle_reserve(stream, msg)

    async def _handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        await self.handle_connect(stream, msg)

    async def _relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,  # type: ignore[override]
                          deadline: float | None = None, circuit_data_limit: list[int] | None = None) -> None:
        await self.relay_data(src_stream, dst_stream, peer_id, deadline, circuit_data_limit)
