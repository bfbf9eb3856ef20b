"""Pure resource accounting (no I/O, no trio): scopes, reservations, refusals.

Like go-libp2p's resource manager, every resource is counted in a DAG of scopes
(system; transient for handshakes and for streams still negotiating their protocol, with
transient-peer and transient-ip shares; one per IP address, peer, protocol, protocol×peer,
protocol×IP) and a reservation succeeds only if every scope it touches stays within its
limit; otherwise nothing is taken and the refusal is counted in `blocked` by
(direction, scope kind, resource), the labels of go-libp2p's `libp2p_rcmgr_blocked_resources`.
Adapters (punch_net/p2p/patches/rcmgr_*, messaging/protocol.py) refuse or wait on a refusal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from punch_net.rcmgr.limits import PROTOCOL_LIMITS, Limits, ProtocolLimits

# Resource names (go-libp2p's `resource` label values), plus ours for handshakes and requests.
CONNS = "connections"
HANDSHAKES = "handshakes"
STREAMS = "streams"
REQUESTS = "requests"
MEMORY = "memory"

Key = tuple[str, str, str]  # (scope kind, scope name, resource): ("peer", "Qm…", "streams")
_SYSTEM_REQUESTS: Key = ("system", "", REQUESTS)
_SYSTEM_MEMORY: Key = ("system", "", MEMORY)


@dataclass(frozen=True)
class Refusal:
    """Which scope refused: `scope` is its kind ("system", "transient", "transient-peer",
    "transient-ip", "ip", "peer", "protocol", "protocol-peer", "protocol-ip"), `resource`
    what ran out."""

    scope: str
    resource: str


class Reservation:
    """Resources taken by one connection, handshake, stream or request; `release()` gives
    them back (idempotent, so every exit path may call it)."""

    __slots__ = ("_amounts", "_manager", "released")

    def __init__(self, manager: ResourceManager, amounts: Sequence[tuple[Key, int]]) -> None:
        self._manager = manager
        self._amounts = amounts
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._manager._give_back(self._amounts)


class _Requests:
    """One peer's command requests in flight: how many, and their bytes."""

    __slots__ = ("count", "memory")

    def __init__(self) -> None:
        self.count = 0
        self.memory = 0


class _RequestReservation(Reservation):
    """One request's share (made per request, so counted apart from the scope counters:
    a peer's `_Requests` and two node-wide totals instead of four dict keys)."""

    __slots__ = ("_peer", "_size", "_state")

    def __init__(self, manager: ResourceManager, peer: str, state: _Requests, size: int) -> None:
        super().__init__(manager, ())
        self._peer = peer
        self._state = state
        self._size = size

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._manager._give_back_request(self._peer, self._state, self._size)


class ResourceManager:
    """The node's accounting. `reserve_*` return a `Reservation` or a `Refusal`."""

    def __init__(self, limits: Limits | None = None,
                 protocols: Mapping[str, ProtocolLimits] = PROTOCOL_LIMITS) -> None:
        self.limits = limits or Limits()
        self.protocols = protocols  # per-protocol exceptions to the general stream limits
        self._used: Counter[Key] = Counter()  # every resource but requests' (below)
        self._requests: dict[str, _Requests] = {}  # peer -> its requests in flight
        self._requests_total = 0  # the system scope's REQUESTS
        self._request_memory_total = 0  # the system scope's MEMORY
        self.blocked: Counter[tuple[str, str, str]] = Counter()  # (dir, scope kind, resource)
        self._on_release: list[Callable[[], None]] = []
        self.memory_released = 0  # bytes of request memory given back, ever (memory.py trims after bursts)

    # ---------------------------------------------------------------- queries

    def used(self, scope: str, name: str, resource: str) -> int:
        return self.usage().get((scope, name, resource), 0) if resource in (REQUESTS, MEMORY) \
            else self._used.get((scope, name, resource), 0)

    def usage(self) -> dict[Key, int]:
        """Every non-zero counter (for metrics and tests)."""
        out = {k: v for k, v in self._used.items() if v}
        for peer, state in self._requests.items():
            out["peer", peer, REQUESTS] = state.count
            if state.memory:
                out["peer", peer, MEMORY] = state.memory
        if self._requests_total:
            out[_SYSTEM_REQUESTS] = self._requests_total
        if self._request_memory_total:
            out[_SYSTEM_MEMORY] = self._request_memory_total
        return out

    def on_release(self, callback: Callable[[], None]) -> None:
        """Call `callback` after any reservation is released (adapters wake waiters)."""
        self._on_release.append(callback)

    # ---------------------------------------------------------------- reservations

    def reserve_connection(self, ip: str) -> Reservation | Refusal:
        """One inbound connection from `ip`, for its whole life."""
        lim = self.limits
        return self._reserve("inbound", [
            ("system", "", CONNS, 1, lim.conns_inbound),
            ("ip", ip, CONNS, 1, lim.conns_inbound_per_ip),
        ])

    def reserve_handshake(self, ip: str) -> Reservation | Refusal:
        """One inbound handshake in progress from `ip` (the transient scope)."""
        lim = self.limits
        return self._reserve("inbound", [
            ("transient", "", HANDSHAKES, 1, lim.handshakes),
            ("ip", ip, HANDSHAKES, 1, lim.handshakes_per_ip),
        ])

    def reserve_negotiation(self, peer: str, ip: str) -> Reservation | Refusal:
        """One inbound stream from `peer` (at `ip`; "" if unknown) that has not chosen its
        protocol yet (go-libp2p counts these in the transient scope)."""
        lim = self.limits
        wants = [
            ("transient", "", STREAMS, 1, lim.streams_negotiating),
            ("transient-peer", peer, STREAMS, 1, lim.streams_negotiating_per_peer),
        ]
        if ip:
            wants.append(("transient-ip", ip, STREAMS, 1, lim.streams_negotiating_per_ip))
        return self._reserve("inbound", wants)

    def protocol_limits(self, protocol: str) -> ProtocolLimits:
        """`protocol`'s stream limits (its exception, else the general ones), all filled in."""
        lim = self.limits
        spec = self.protocols.get(protocol, ProtocolLimits())
        return ProtocolLimits(
            spec.streams if spec.streams is not None else lim.streams_per_protocol,
            spec.per_peer if spec.per_peer is not None else lim.streams_per_protocol_per_peer,
            spec.per_ip if spec.per_ip is not None else lim.streams_per_protocol_per_ip,
            spec.first_byte, spec.every_read,
        )

    def reserve_stream(self, protocol: str, peer: str, ip: str) -> Reservation | Refusal:
        """One inbound stream of `protocol` from `peer` (connected from `ip`; "" if unknown)."""
        lim = self.limits
        spec = self.protocol_limits(protocol)
        assert spec.streams is not None and spec.per_peer is not None and spec.per_ip is not None
        wants = [
            ("system", "", STREAMS, 1, lim.streams_inbound),
            ("peer", peer, STREAMS, 1, lim.streams_inbound_per_peer),
            ("protocol", protocol, STREAMS, 1, spec.streams),
            ("protocol-peer", f"{protocol} {peer}", STREAMS, 1, spec.per_peer),
        ]
        if ip:
            wants.append(("protocol-ip", f"{protocol} {ip}", STREAMS, 1, spec.per_ip))
        return self._reserve("inbound", wants)

    def reserve_request(self, peer: str, size: int) -> Reservation | Refusal:
        """One command request of `size` bytes (request + reply) being served for `peer`.
        A refusal by "peer" means wait for that peer's requests; by "system", refuse.
        (Runs per request: plain counters, not `_reserve`'s scope keys.)"""
        lim = self.limits
        state = self._requests.get(peer)
        if state is not None and state.count >= lim.requests_in_flight_per_peer:
            refusal = Refusal("peer", REQUESTS)
        elif state is not None and state.memory + size > max(lim.request_memory_per_peer, size):
            refusal = Refusal("peer", MEMORY)
        elif self._requests_total >= lim.requests_in_flight:
            refusal = Refusal("system", REQUESTS)
        elif self._request_memory_total + size > lim.request_memory:
            refusal = Refusal("system", MEMORY)
        else:
            if state is None:
                state = self._requests[peer] = _Requests()
            state.count += 1
            state.memory += size
            self._requests_total += 1
            self._request_memory_total += size
            return _RequestReservation(self, peer, state, size)
        self.blocked[("inbound", refusal.scope, refusal.resource)] += 1
        return refusal

    # ---------------------------------------------------------------- internals

    def _reserve(self, direction: str, wants: Sequence[tuple[str, str, str, int, int]]) -> Reservation | Refusal:
        for scope, name, resource, amount, limit in wants:
            if self._used.get((scope, name, resource), 0) + amount > limit:
                self.blocked[(direction, scope, resource)] += 1
                return Refusal(scope, resource)
        amounts: dict[Key, int] = {}
        for scope, name, resource, amount, _ in wants:
            key = (scope, name, resource)
            self._used[key] += amount
            amounts[key] = amounts.get(key, 0) + amount
        return Reservation(self, tuple(amounts.items()))

    def _give_back(self, amounts: Sequence[tuple[Key, int]]) -> None:
        used = self._used
        for key, amount in amounts:
            left = used[key] - amount
            if left > 0:
                used[key] = left
            else:
                del used[key]  # per-peer/IP keys must not pile up after they leave
        for callback in self._on_release:
            callback()

    def _give_back_request(self, peer: str, state: _Requests, size: int) -> None:
        state.count -= 1
        state.memory -= size
        if not state.count and self._requests.get(peer) is state:
            del self._requests[peer]  # peers must not pile up after they leave
        self._requests_total -= 1
        self._request_memory_total -= size
        self.memory_released += size
        for callback in self._on_release:
            callback()
