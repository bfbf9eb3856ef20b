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
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol

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
        await CircuitV2Protocol._handle_connect(self, stream, msg)

    async def library_relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,
                                 deadline: float | None = None,
                                 circuit_data_limit: list[int] | None = None) -> None:
        await CircuitV2Protocol._relay_data(self, src_stream, dst_stream, peer_id, deadline,  # type: ignore[arg-type]
                                            circuit_data_limit)

    # ------------------------------------------------------------ the overrides

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        await self.handle_reserve(stream, msg)

    async def _handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        await self.handle_connect(stream, msg)

    async def _relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,  # type: ignore[override]
                          deadline: float | None = None, circuit_data_limit: list[int] | None = None) -> None:
        await self.relay_data(src_stream, dst_stream, peer_id, deadline, circuit_data_limit)
