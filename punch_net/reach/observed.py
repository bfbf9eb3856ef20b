"""Observed addresses, sans-IO: which public address do peers in different networks agree
they see us at?

As go-libp2p's observed-address manager (p2p/host/basic/obsaddr): identify tells us the
address each peer sees us at; an address counts once per observer *group* and is used
once enough groups agree. Differences, on purpose:
- two groups suffice (go: four), but a group is a whole network: an IPv4 /24, an IPv6 /56
  (go: one IPv4 address), so two peers of one provider's /24 are one vote; one group
  suffices once AutoNAT has dialed us back (a home router forwarding a port: AutoNAT says
  public, but nobody else can reach us to vote before we advertise the address);
- only observations on connections whose local port is a listen port count (inbound
  connections): py-libp2p dials from ephemeral ports, whose mapping nobody can dial back;
- only public observed addresses count (a LAN peer seeing our LAN address tells nothing);
- a vote lasts while its connection is open and `linger` seconds after (go: 10 min).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

THRESHOLD = 2
LINGER = 600.0
MAX_CONFIRMED = 3


def observer_group(ip: str) -> str:
    """The network an observer votes for: its IPv4 /24 or IPv6 /56."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 24 if addr.version == 4 else 56
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass
class _Vote:
    observed: str  # /ip4/IP/tcp/PORT
    group: str
    closed_at: float | None = None


@dataclass
class ObservedAddrs:
    """Feed it `observe` / `closed` with the time; read `confirmed(now)`."""

    threshold: int = THRESHOLD
    linger: float = LINGER
    _votes: dict[object, _Vote] = field(default_factory=dict)

    def observe(self, conn: object, observer_ip: str, observed: str, *, on_listen_port: bool,
                public: bool) -> bool:
        """One identify observation on connection `conn`. Returns whether it was counted."""
        if not on_listen_port or not public:
            return False
        self._votes[conn] = _Vote(observed, observer_group(observer_ip))
        return True

    def closed(self, conn: object, now: float) -> None:
        vote = self._votes.get(conn)
        if vote is not None and vote.closed_at is None:
            vote.closed_at = now

    def expire(self, now: float) -> None:
        for conn, vote in list(self._votes.items()):
            if vote.closed_at is not None and now - vote.closed_at > self.linger:
                del self._votes[conn]

    def groups(self, now: float) -> dict[str, set[str]]:
        """observed address → the observer groups that currently vote for it."""
        self.expire(now)
        out: dict[str, set[str]] = {}
        for vote in self._votes.values():
            out.setdefault(vote.observed, set()).add(vote.group)
        return out

    def confirmed(self, now: float, autonat_public: bool = False) -> list[str]:
        """Addresses with at least `threshold` groups (1 when AutoNAT found us public), most
        votes first (at most 3)."""
        need = 1 if autonat_public else self.threshold
        counted = [(len(g), addr) for addr, g in self.groups(now).items() if len(g) >= need]
        counted.sort(key=lambda x: (-x[0], x[1]))
        return [addr for _, addr in counted[:MAX_CONFIRMED]]
