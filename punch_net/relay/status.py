"""NAT traversal snapshot types: pure data (what `relay_status()` returns and the
control socket carries)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from punch_net.relay.outcomes import HolePunchRecord


@dataclass
class HeldReservation:
    """A reservation we hold on a relay."""

    relay: str
    relay_addr: str
    state: str  # reserving / active / refused / lost
    expires: float = 0.0
    renewals: int = 0
    limit_duration: int = 0
    limit_data: int = 0
    circuit_addrs: list[str] = field(default_factory=list)
    error: str = ""
    since: float = field(default_factory=time.time)

    def expires_in(self, now: float | None = None) -> float:
        return max(0.0, self.expires - (now or time.time())) if self.expires else 0.0


@dataclass
class ServedReservationInfo:
    peer_id: str
    ip: str
    age_s: float
    expires_in_s: float
    renewals: int


@dataclass
class ServedCircuitInfo:
    src: str
    dst: str
    age_s: float
    bytes: int
    bytes_left: int | None  # None = no data cap
    seconds_left: float | None  # None = no duration cap
    state: str  # open / closed / refused / data limit / duration limit


@dataclass
class RelayStatus:
    reachability: str
    reachability_checked: float | None
    observed_addrs: list[str]
    circuit_addrs: list[str]
    reservations: list[HeldReservation]
    service_enabled: bool
    service_limits: dict[str, int] | None
    served_reservations: list[ServedReservationInfo]
    served_circuits: list[ServedCircuitInfo]
    service_counters: dict[str, int]
    hole_punches: list[HolePunchRecord]
    outcome_counts: dict[str, int]
    connections_via: dict[str, int]
    # how others reach us (punch_net/reach/summary.py): announced, port-mapped, public,
    # relayed only or unknown, and since when (time.time()); the addresses behind it
    reachable_as: str = "unknown"
    reachable_since: float | None = None
    announced_addrs: list[str] = field(default_factory=list)
    mapped_addrs: list[str] = field(default_factory=list)
    confirmed_addrs: list[str] = field(default_factory=list)  # observed by two networks

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for rec in data["hole_punches"]:
            rec["outcome"] = str(rec["outcome"]) if rec["outcome"] else None
        return data
