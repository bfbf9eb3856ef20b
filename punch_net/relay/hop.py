"""Circuit relay v2 client side: reserve a slot on a relay, open a circuit through it.

Written on py-libp2p's protobufs rather than `CircuitV2Transport` so every refusal keeps
its status code (the caller gets "relay is full", not "connection failed") and so we
know the reservation's expiry and limits. Pitfalls this sidesteps: the swarm drops
`/p2p-circuit` addresses in `host.connect()`, and `CircuitV2Transport.make_reservation`
fails with "unknown relay" unless `discover_relays()` ran first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import IHost, INetConn
from libp2p.connection_types import ConnectionType
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

HOP_TIMEOUT = 10.0

# What each refusal means, for one-line messages.
STATUS_TEXT = {
    StatusCode.RESERVATION_REFUSED: "reservation refused",
    StatusCode.RESOURCE_LIMIT_EXCEEDED: "relay resource limit reached",
    StatusCode.PERMISSION_DENIED: "permission denied",
    StatusCode.CONNECTION_FAILED: "relay could not reach the peer",
    StatusCode.NO_RESERVATION: "the peer holds no reservation on this relay",
    StatusCode.MALFORMED_MESSAGE: "malformed message",
    StatusCode.UNEXPECTED_MESSAGE: "unexpected message",
}


class RelayRefused(Exception):
    """The relay answered with a non-OK status."""

    def __init__(self, relay: ID, status: int, what: str) -> None:
        try:
            name = StatusCode(status).name
        except ValueError:
            name = str(status)
        text = STATUS_TEXT.get(status, "refused")  # type: ignore[call-overload]
        super().__init__(f"relay {str(relay)[-8:]} refused {what}: {name} ({text})")
        self.status = status
        self.status_name = name


@dataclass
class ReservationGrant:
    relay: ID
    expires: int  # unix seconds
    relay_addrs: list[str]  # the relay's public addresses, as it reported them
    limit_duration: int  # seconds per circuit, 0 = none
    limit_data: int  # bytes per circuit, 0 = none
    granted_at: float = field(default_factory=time.time)


def status_of(resp: HopMessage) -> int:
    return int(resp.status) if resp.HasField("status") else int(StatusCode.OK)


def parse_reservation(relay: ID, resp: HopMessage) -> ReservationGrant:
    """A RESERVE answer as a grant (pure; raises RelayRefused on a refusal)."""
    if resp.type != HopMessage.STATUS:
        raise RelayRefused(relay, int(StatusCode.UNEXPECTED_MESSAGE), "reservation")
    status = status_of(resp)
    if status != StatusCode.OK:
        raise RelayRefused(relay, status, "reservation")
    addrs: list[str] = []
    expires = 0
    if resp.HasField("reservation"):
        expires = int(resp.reservation.expire)
        for raw in resp.reservation.addrs:
            try:
                addrs.append(str(multiaddr.Multiaddr(bytes(raw))))
            except Exception:
                continue
    duration = int(resp.limit.duration) if resp.HasField("limit") else 0
    data = int(resp.limit.data) if resp.HasField("limit") else 0
    return ReservationGrant(relay, expires, addrs, duration, data)


async def reserve(host: IHost, relay: ID, timeout: float = HOP_TIMEOUT) -> ReservationGrant:
    """Send RESERVE to a connected relay (also renews an existing reservation)."""
    with trio.fail_after(timeout):
        stream = await host.new_stream(relay, [HOP_PROTOCOL])
        try:
            msg = HopMessage(type=HopMessage.RESERVE, peer=CircuitPeerId(id=host.get_id().to_bytes()))
            await write_delimited_msg(stream, msg)
            resp = await read_delimited_msg(stream, HopMessage)
        finally:
            with trio.move_on_after(1):
                try:
                    await stream.close()
                except Exception:
                    pass
    return parse_reservation(relay, resp)


def circuit_addr(relay_addr: str, relay: ID, dest: ID) -> str:
    """`<relay addr>/p2p/<relay>/p2p-circuit/p2p/<dest>` from a relay address with or without /p2p."""
    base = relay_addr.split("/p2p/")[0]
    return f"{base}/p2p/{relay}/p2p-circuit/p2p/{dest}"


def split_circuit_addr(addr: str) -> tuple[str, ID, ID]:
    """(relay transport addr, relay id, destination id) of a circuit address; ValueError if not one."""
    if "/p2p-circuit" not in addr:
        raise ValueError(f"not a circuit address: {addr}")
    left, _, right = addr.partition("/p2p-circuit")
    if not right.startswith("/p2p/"):
        raise ValueError(f"circuit address has no destination peer: {addr}")
    dest = ID.from_base58(right[len("/p2p/"):].split("/")[0])
    if "/p2p/" not in left:
        raise ValueError(f"circuit address has no relay peer id: {addr}")
    base, _, relay_text = left.rpartition("/p2p/")
    return base, ID.from_base58(relay_text), dest


def is_circuit(addr: object) -> bool:
    return "/p2p-circuit" in str(addr)


async def open_circuit(host: IHost, relay: ID, dest: ID, timeout: float = HOP_TIMEOUT) -> INetConn:
    """CONNECT through a relay we are connected to and upgrade the stream into a connection."""
    with trio.fail_after(timeout):
        stream = await host.new_stream(relay, [HOP_PROTOCOL])
        try:
            await write_delimited_msg(
                stream, HopMessage(type=HopMessage.CONNECT, peer=CircuitPeerId(id=dest.to_bytes())))
            resp = await read_delimited_msg(stream, HopMessage)
            status = status_of(resp)
            if resp.type != HopMessage.STATUS or status != StatusCode.OK:
                raise RelayRefused(relay, status if resp.type == HopMessage.STATUS
                                   else int(StatusCode.UNEXPECTED_MESSAGE), "the circuit")
            ma = multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{dest}")
            raw = RawConnection(stream=stream, initiator=True, connection_type=ConnectionType.RELAYED,
                                addresses=[ma])
            return await host.upgrade_outbound_connection(raw, dest)  # type: ignore[attr-defined,no-any-return]
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:
                    pass
            raise
