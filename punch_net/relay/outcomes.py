"""Hole-punch outcomes and per-attempt records: pure data, no sockets.

The labels are the ones the libp2p hole-punching measurement campaign (punchr) used, so
Punch's figures can be read next to the published ~70% success rate in the wild.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from dataclasses import dataclass, field


class Outcome(enum.StrEnum):
    SUCCESS = "SUCCESS"  # a direct connection exists after punching
    FAILED = "FAILED"  # every punch round ran, no direct connection
    TIMEOUT = "TIMEOUT"  # the DCUtR exchange or the punch ran out of time
    CONNECTION_REVERSED = "CONNECTION_REVERSED"  # the peer reached us directly without a punch
    NO_CONNECTION = "NO_CONNECTION"  # no relayed connection to coordinate over
    PROTOCOL_ERROR = "PROTOCOL_ERROR"  # the peer broke the DCUtR exchange
    CANCELLED = "CANCELLED"  # we shut down (or the relayed connection closed) mid-attempt


@dataclass
class HolePunchRecord:
    """One hole-punch session with one peer (up to `max_attempts` rounds)."""

    peer_id: str
    side: str  # "initiator" (we got the relayed connection) or "responder"
    started: float = field(default_factory=time.time)
    outcome: Outcome | None = None
    attempts: int = 0
    ms: float = 0.0
    error: str = ""
    remote_addrs: list[str] = field(default_factory=list)
    direct_addr: str = ""
    rtt_ms: float = 0.0

    def finish(self, outcome: Outcome, error: str = "") -> HolePunchRecord:
        self.outcome = outcome
        self.error = error
        self.ms = round((time.time() - self.started) * 1000, 1)
        return self


def count_outcomes(records: list[HolePunchRecord]) -> dict[str, int]:
    """Counts per outcome label, every label present (zeros included) in a fixed order."""
    counts = Counter(r.outcome for r in records if r.outcome is not None)
    return {o.value: counts.get(o, 0) for o in Outcome}
