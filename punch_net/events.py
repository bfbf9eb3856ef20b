"""Typed node events and a bounded fan-out bus.

Events flow one way: node -> bus -> each subscriber's bounded trio channel. A slow
subscriber loses events (counted in `dropped`) instead of stalling the node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import trio


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"
    ts: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, **asdict(self)}


@dataclass(frozen=True, kw_only=True)
class Listening(Event):
    kind: ClassVar[str] = "listening"
    peer_id: str
    addrs: list[str]
    role: str


@dataclass(frozen=True, kw_only=True)
class BootstrapRetry(Event):
    kind: ClassVar[str] = "bootstrap_retry"
    addr: str
    error: str
    retry_in: float


@dataclass(frozen=True, kw_only=True)
class Bootstrapped(Event):
    kind: ClassVar[str] = "bootstrapped"
    peers: list[str]
    routing_table_size: int


@dataclass(frozen=True, kw_only=True)
class Registered(Event):
    kind: ClassVar[str] = "registered"
    namespace: str
    key: str


@dataclass(frozen=True, kw_only=True)
class Discovered(Event):
    kind: ClassVar[str] = "discovered"
    peer_id: str
    addrs: list[str]
    namespace: str


@dataclass(frozen=True, kw_only=True)
class PeerConnected(Event):
    kind: ClassVar[str] = "connected"
    peer_id: str
    direction: str
    addr: str
    via: str = "direct"


@dataclass(frozen=True, kw_only=True)
class PeerDisconnected(Event):
    kind: ClassVar[str] = "disconnected"
    peer_id: str


@dataclass(frozen=True, kw_only=True)
class MessageSent(Event):
    kind: ClassVar[str] = "message_sent"
    peer_id: str
    id: str
    command: str
    args: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Reply(Event):
    kind: ClassVar[str] = "reply"
    peer_id: str
    id: str
    ok: bool
    result: Any = None
    error: dict[str, str] | None = None
    rtt_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class MessageReceived(Event):
    kind: ClassVar[str] = "message_received"
    peer_id: str
    id: str
    command: str
    args: dict[str, Any]
    sender: str
    ok: bool = True


@dataclass(frozen=True, kw_only=True)
class DHTUpdated(Event):
    kind: ClassVar[str] = "dht_updated"
    size: int


@dataclass(frozen=True, kw_only=True)
class HolePunch(Event):
    """One DCUtR hole-punch session ended (outcome labels: punch_net.relay.outcomes.Outcome)."""

    kind: ClassVar[str] = "hole_punch"
    peer_id: str
    outcome: str
    attempts: int
    ms: float
    side: str = "initiator"
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class Reservation(Event):
    """A relay reservation was made or renewed (`expires`: unix seconds)."""

    kind: ClassVar[str] = "reservation"
    relay: str
    expires: float
    renewal: bool = False
    addrs: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ReachabilityChanged(Event):
    kind: ClassVar[str] = "reachability"
    status: str  # unknown / public / private
    servers: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(Event):
    kind: ClassVar[str] = "error"
    message: str
    where: str = ""


@dataclass(frozen=True, kw_only=True)
class CapabilitiesUpdated(Event):
    """A peer told us its capabilities (answer or periodic re-announcement)."""

    kind: ClassVar[str] = "capabilities"
    peer_id: str
    capabilities: dict[str, Any]

    def human(self) -> str | None:
        return None  # periodic and verbose: --json only


@dataclass(frozen=True, kw_only=True)
class Routed(Event):
    """A weighted-routing send finished (punch_net.routing.selection): who was tried and why."""

    kind: ClassVar[str] = "routed"
    namespace: str
    command: str
    peer_id: str  # the node that answered ("" when every attempt failed)
    ok: bool
    attempts: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def human(self) -> str:
        tried = len(self.attempts)
        if not self.ok:
            return f"[red]✗[/red] {self.command} to '{self.namespace}': all {tried} candidates failed"
        best = next((c for c in self.candidates if c["peer_id"] == self.peer_id), None)
        why = "" if best is None else " (score {:.2f}: {})".format(
            best["score"], ", ".join(f"{k} {v:.2f}" for k, v in best["parts"].items()))
        over = f" after {tried - 1} failover{'s' if tried > 2 else ''}" if tried > 1 else ""
        return f"[cyan]→ ROUTED[/cyan] {self.command} to {self.peer_id[-8:]}{over}{why}"


@dataclass(frozen=True, kw_only=True)
class CrawlFinished(Event):
    """The monitor finished one crawl round of the network."""

    kind: ClassVar[str] = "crawl"
    round: int
    visited: int
    alive: int
    known: int
    duration_ms: float

    def human(self) -> str:
        return (f"[cyan]i[/cyan] crawl #{self.round}: {self.alive} of {self.known} known peers alive "
                f"({self.visited} visited in {self.duration_ms / 1000:.1f}s)")


@dataclass(frozen=True, kw_only=True)
class ControlListening(Event):
    """The control socket (punch-tui --attach) is ready at `path`."""

    kind: ClassVar[str] = "control"
    path: str

    def human(self) -> str:
        return f"[dim]control socket: {self.path} (attach with: punch-tui --attach {self.path})[/dim]"


@dataclass(frozen=True, kw_only=True)
class MetricsServing(Event):
    kind: ClassVar[str] = "metrics"
    url: str

    def human(self) -> str:
        return f"[dim]metrics: {self.url}[/dim]"


@dataclass(frozen=True, kw_only=True)
class WebServing(Event):
    """The web console is served at `url` (with ?token=... when not on loopback)."""

    kind: ClassVar[str] = "web"
    url: str
    token: str = ""

    def human(self) -> str:
        return f"[green]✓[/green] web console: {self.url}"


class EventBus:
    """Fan events out to subscribers without ever blocking the publisher."""

    def __init__(self) -> None:
        self._subs: dict[trio.MemorySendChannel[Event], int] = {}
        self.dropped = 0
        self.published = 0

    def publish(self, event: Event) -> None:
        self.published += 1
        for chan in list(self._subs):
            try:
                chan.send_nowait(event)
            except trio.WouldBlock:
                self._subs[chan] += 1
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subs.pop(chan, None)

    @contextmanager
    def subscribe(self, maxsize: int = 1000) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        send, recv = trio.open_memory_channel[Event](maxsize)
        self._subs[send] = 0
        try:
            yield recv
        finally:
            self._subs.pop(send, None)
            send.close()
