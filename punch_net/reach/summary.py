"""How this node is reachable, in one word for the console and the API, and since when."""

from __future__ import annotations

from dataclasses import dataclass

REACHABLE_AS = ("announced", "port-mapped", "public", "relayed only", "unknown")


def reachable_as(*, announced: bool, mapped: bool, observed: bool, autonat: str, circuits: bool) -> str:
    """The strongest way in, first match wins: an operator's --announce, a router's port
    mapping, a public address (AutoNAT dialed us back, or two networks saw us at one),
    relay circuits only; otherwise unknown (AutoNAT has not judged, or says private and
    no relay holds a slot for us yet)."""
    if announced:
        return "announced"
    if mapped:
        return "port-mapped"
    if autonat == "public" or observed:
        return "public"
    if circuits:
        return "relayed only"
    return "unknown"


@dataclass
class Since:
    """When the current value began (wall clock)."""

    value: str = ""
    since: float | None = None

    def update(self, value: str, now: float) -> float:
        if value != self.value or self.since is None:
            self.value, self.since = value, now
        return self.since
