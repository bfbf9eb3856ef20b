"""The relay (hop) side: py-libp2p's CircuitV2Protocol with Punch's limits and bookkeeping.

The library enforces reservations in total, reservation TTL and per-circuit duration and
data caps. We add what it lacks: a per-IP reservation cap, a cap on circuits in total,
and a record of every reservation and circuit served (peer pair, age, bytes, limit left)
for `node.relay_status()`. The hooks it overrides (and the fix that a reservation is for
the connection's peer, not the one the message names) are in punch_net/p2p/patches/relay_hop.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.utils import write_delimited_msg

from punch_net.p2p.patches.relay_hop import PatchedCircuitV2

RECENT_CIRCUITS = 50


@dataclass(frozen=True)
class RelayServiceLimits:
    max_reservations: int = 128
    max_reservations_per_ip: int = 8
    reservation_ttl: int = 3600
    max_circuits: int = 64  # in total
    max_circuits_per_peer: int = 16  # per reserved destination
    circuit_duration: int = 300  # seconds, 0 = unlimited
    circuit_bytes: int = 1 << 20  # bytes, 0 = unlimited

    def library_limits(self) -> RelayLimits:
        return RelayLimits(duration=self.circuit_duration, data=self.circuit_bytes,
                           max_circuit_conns=self.max_circuits_per_peer,
                           max_reservations=self.max_reservations,
                           reservation_ttl=self.reservation_ttl)


@dataclass
class ServedReservation:
    peer_id: str
    ip: str
    created: float
    expires: float
    renewals: int = 0


@dataclass
class ServedCircuit:
    src: str
    dst: str
    started: float
    bytes_limit: int
    duration_limit: int
    ended: float | None = None
    _budget: list[int] | None = None
    outcome: str = "open"

    @property
    def bytes(self) -> int:
        if self._budget is None or not self.bytes_limit:
            return 0
        return self.bytes_limit - self._budget[0]


@dataclass
class ServiceCounters:
    reservations_accepted: int = 0
    reservations_renewed: int = 0
    reservations_refused: int = 0
    circuits_opened: int = 0
    circuits_refused: int = 0


@dataclass
class _Tracking:
    reservations: dict[ID, ServedReservation] = field(default_factory=dict)
    circuits: list[ServedCircuit] = field(default_factory=list)
    by_stream: dict[int, ServedCircuit] = field(default_factory=dict)
    counters: ServiceCounters = field(default_factory=ServiceCounters)


def _remote_ip(stream: INetStream) -> str:
    try:
        remote = stream.get_remote_address()  # type: ignore[attr-defined]
    except Exception:
        return "?"
    return str(remote[0]) if remote else "?"


class RelayService(PatchedCircuitV2):
    """A circuit relay v2 hop with limits, refusing clearly and recording what it serves."""

    def __init__(self, host: IHost, limits: RelayServiceLimits, on_change: Any = None) -> None:
        super().__init__(host, limits.library_limits(), allow_hop=True)
        self.punch_limits = limits
        self.track = _Tracking()
        self._on_change = on_change or (lambda kind, **kw: None)

    # ------------------------------------------------------------ reservations

    def _live_reservations(self) -> dict[ID, ServedReservation]:
        """Unexpired reservations, read from the library's resource manager (the source of
        truth, updated before the RESERVE answer is written) plus what we noted (IP, renewals)."""
        now = time.time()
        out: dict[ID, ServedReservation] = {}
        for peer, res in self.reservations().items():
            if res.expires_at < now:
                continue
            noted = self.track.reservations.get(peer)
            out[peer] = ServedReservation(str(peer), noted.ip if noted else "?", res.created_at, res.expires_at,
                                          noted.renewals if noted else 0)
        for peer in [p for p, r in self.track.reservations.items() if p not in out and r.expires]:
            del self.track.reservations[peer]  # gone from the library (expiry 0.0: being answered now)
        return out

    async def _refuse(self, stream: INetStream, code: StatusCode) -> None:
        await write_delimited_msg(stream, HopMessage(type=HopMessage.STATUS, status=to_proto_status(code)))

    async def handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        peer = stream.muxed_conn.peer_id  # the connection's peer, not a claimed one
        ip = _remote_ip(stream)
        live = self._live_reservations()
        renewing = peer in live
        if not renewing:
            same_ip = sum(1 for r in live.values() if r.ip == ip)
            if same_ip >= self.punch_limits.max_reservations_per_ip or len(live) >= self.punch_limits.max_reservations:
                self.track.counters.reservations_refused += 1
                self._on_change("reservation_refused", peer=str(peer), ip=ip)
                await self._refuse(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED)
                return
        noted = self.track.reservations.get(peer)
        if noted is None or not renewing:
            noted = ServedReservation(str(peer), ip, time.time(), 0.0)
            self.track.reservations[peer] = noted  # before the library answers: no window without the IP
        await self.library_reserve(stream, msg)  # for the authenticated peer only (the patch)
        res = self.reservations().get(peer)
        if res is None or res.is_expired():
            self.track.reservations.pop(peer, None)
            self.track.counters.reservations_refused += 1
            return
        noted.expires = res.expires_at
        if renewing:
            noted.renewals += 1
            self.track.counters.reservations_renewed += 1
        else:
            self.track.counters.reservations_accepted += 1
        self._on_change("reservation_served", peer=str(peer))

    # ------------------------------------------------------------ circuits

    def active_circuits(self) -> list[ServedCircuit]:
        return [c for c in self.track.circuits if c.ended is None]

    async def handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        src = stream.muxed_conn.peer_id
        try:
            dst = ID(msg.peer.id)
        except Exception:
            await self._refuse(stream, StatusCode.MALFORMED_MESSAGE)
            return
        has_reservation = self.resource_manager.can_accept_connection(dst)  # else the library says NO_RESERVATION
        if has_reservation and len(self.active_circuits()) >= self.punch_limits.max_circuits:
            self.track.counters.circuits_refused += 1
            await self._refuse(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED)
            await trio.sleep(0.2)
            await stream.reset()
            return
        lim = self.punch_limits
        circuit = ServedCircuit(str(src), str(dst), time.time(), lim.circuit_bytes, lim.circuit_duration)
        self.track.circuits.append(circuit)
        self.track.by_stream[id(stream)] = circuit
        try:
            await self.library_connect(stream, msg)
        finally:
            self.track.by_stream.pop(id(stream), None)
            circuit.ended = time.time()
            if circuit.outcome == "open":
                circuit.outcome = "refused" if circuit._budget is None else "closed"
            if circuit.outcome == "refused":
                self.track.counters.circuits_refused += 1
            ended = [c for c in self.track.circuits if c.ended is not None]
            if len(ended) > RECENT_CIRCUITS:
                self.track.circuits.remove(ended[0])

    async def relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,
                          deadline: float | None = None, circuit_data_limit: list[int] | None = None) -> None:
        circuit = self.track.by_stream.get(id(src_stream)) or self.track.by_stream.get(id(dst_stream))
        if circuit is not None and circuit._budget is None:
            circuit._budget = circuit_data_limit
            self.track.counters.circuits_opened += 1
            self._on_change("circuit_opened", src=circuit.src, dst=circuit.dst)
        await self.library_relay_data(src_stream, dst_stream, peer_id, deadline, circuit_data_limit)
        if circuit is not None and circuit._budget is not None and circuit.bytes_limit and circuit._budget[0] <= 0:
            circuit.outcome = "data limit"
        elif circuit is not None and deadline is not None and time.monotonic() > deadline:
            circuit.outcome = "duration limit"
