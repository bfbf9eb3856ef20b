"""Typed node events (data only: the CLI and the console render them) and a bounded
fan-out bus.

Events flow one way: node -> bus -> each subscriber's bounded trio channel. A slow
subscriber loses events (counted in its `dropped`) instead of stalling the node; a new
subscriber may replay the bus's backlog first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import trio


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"
    transient: ClassVar[bool] = False  # frequent ticks, not kept in the bus backlog
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
class AddrsChanged(Event):
    """What we advertise changed (an observed or port-mapped address came or went)."""

    kind: ClassVar[str] = "addrs_changed"
    addrs: list[str]


@dataclass(frozen=True, kw_only=True)
class MdnsPeer(Event):
    """A peer announced itself on our LAN (mDNS)."""

    kind: ClassVar[str] = "mdns_peer"
    peer_id: str
    addrs: list[str]


@dataclass(frozen=True, kw_only=True)
class PortMapped(Event):
    """The router mapped (or unmapped) our listen port (UPnP IGD)."""

    kind: ClassVar[str] = "port_mapped"
    external: str  # /ip4/IP/tcp/PORT, "" once removed
    internal: str
    gateway: str
    lease: int  # seconds, 0 = permanent
    removed: bool = False


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
    transient: ClassVar[bool] = True
    peer_id: str
    capabilities: dict[str, Any]



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



@dataclass(frozen=True, kw_only=True)
class CrawlFinished(Event):
    """The monitor finished one crawl round of the network."""

    kind: ClassVar[str] = "crawl"
    round: int
    visited: int
    alive: int
    known: int
    duration_ms: float



@dataclass(frozen=True, kw_only=True)
class ControlListening(Event):
    """The control socket (punch-tui --attach) is ready at `path`."""

    kind: ClassVar[str] = "control"
    path: str



@dataclass(frozen=True, kw_only=True)
class MetricsServing(Event):
    kind: ClassVar[str] = "metrics"
    url: str



@dataclass(frozen=True, kw_only=True)
class WebServing(Event):
    """The web console is served at `url` (with ?token=... when not on loopback)."""

    kind: ClassVar[str] = "web"
    url: str
    token: str = ""



class Subscription:
    """One subscriber's bounded queue of events; `dropped` counts what it lost by being slow."""

    def __init__(self, send: trio.MemorySendChannel[Event], recv: trio.MemoryReceiveChannel[Event]) -> None:
        self._send = send
        self._recv = recv
        self.dropped = 0

    def offer(self, event: Event) -> bool:
        """Queue without blocking; False when the subscriber is gone."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def close(self) -> None:
        """Stop receiving; the bus forgets this subscriber at its next publish."""
        self._recv.close()

    async def receive(self) -> Event:
        return await self._recv.receive()

    def receive_nowait(self) -> Event:
        return self._recv.receive_nowait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class EventBus:
    """Fan events out to subscribers without ever blocking the publisher.

    The last `backlog` lasting events (not progress ticks) are kept, so a front that comes
    later (an attached console) can replay what happened before it came."""

    def __init__(self, backlog: int = 1000) -> None:
        self._subs: list[Subscription] = []
        self._backlog: deque[Event] = deque(maxlen=backlog)
        self.dropped = 0
        self.published = 0

    def publish(self, event: Event) -> None:
        self.published += 1
        if not event.transient:
            self._backlog.append(event)
        for sub in list(self._subs):
            before = sub.dropped
            if not sub.offer(event):
                self._subs.remove(sub)
            self.dropped += sub.dropped - before

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def backlog(self) -> list[Event]:
        return list(self._backlog)

    @contextmanager
    def subscribe(self, maxsize: int = 1000, replay: bool = False) -> Iterator[Subscription]:
        """A bounded subscription; with `replay`, the backlog (its newest `maxsize`) comes first."""
        send, recv = trio.open_memory_channel[Event](maxsize)
        sub = Subscription(send, recv)
        if replay:
            for event in list(self._backlog)[-maxsize:]:
                sub.offer(event)
        self._subs.append(sub)
        try:
            yield sub
        finally:
            if sub in self._subs:
                self._subs.remove(sub)
            send.close()
