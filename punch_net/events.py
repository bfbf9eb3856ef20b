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
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import trio

# Events are kept (bus backlog), fanned out and logged (`--json`): each field is bounded,
# so a peer's 1 MiB message costs the log a line of ~1 KiB, not 1 MiB (issue #14.4).
FIELD_BUDGET = 8192  # JSON characters of any one field, at most (about)
FIELD_STR_MAX = 2048  # characters of any one string in a field
PREVIEW_BUDGET = 512  # peer-supplied payloads (`args`, `result`): a short preview
PREVIEW_STR_MAX = 200
SHORT_TEXT = 96  # peer-supplied names and ids (command, request id, sender)
ELLIPSIS = "…"
_MARK_COST = 32  # room kept for a "+N more" marker
_MIN_PART = 48  # a container gets a partial item only with this much room left (> 2 + _MARK_COST)
_MAX_DEPTH = 6


def json_cost(value: Any, limit: int, str_max: int, depth: int = 0) -> int:
    """The size of `value` as compact JSON (about: no escapes), or `limit + 1` once it is
    over `limit` or breaks a rule `preview` enforces (a string over `str_max`, too deep).
    Stops early, so a huge value costs as much as the limit, not its size."""
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int | float):
        return 24
    if isinstance(value, str):
        return len(value) + 2 if len(value) <= str_max else limit + 1
    if isinstance(value, list | tuple | dict):
        if depth >= _MAX_DEPTH:
            return limit + 1
        cost = 2
        items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        for key, item in items:
            if key is not None:
                cost += json_cost(key, limit, str_max, depth + 1) + 1
            cost += json_cost(item, limit, str_max, depth + 1) + 1
            if cost > limit:
                return limit + 1
        return cost
    return 24  # another object (ours, never a peer's): as a short value


def preview(value: Any, budget: int = PREVIEW_BUDGET, str_max: int = PREVIEW_STR_MAX,
            depth: int = 0) -> Any:
    """`value` itself when its JSON fits in `budget`, else a shortened copy that does:
    long strings end in "…", long lists end in "… N more", long objects get a "…" key
    saying how many keys were left out. A preview of a preview is itself (events cross
    the control socket and are bounded again there)."""
    if json_cost(value, budget, str_max, depth) <= budget:
        return value
    if isinstance(value, str):
        keep = max(0, min(str_max, budget - 2) - 1)
        return value[:keep] + ELLIPSIS
    if not isinstance(value, list | tuple | dict) or depth >= _MAX_DEPTH:
        return ELLIPSIS
    room = budget - 2 - _MARK_COST
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            k = preview(key, min(room, SHORT_TEXT), str_max, depth + 1) if isinstance(key, str) else key
            left = room - json_cost(k, room, str_max, depth + 1) - 2
            cost = json_cost(item, left, str_max, depth + 1)
            if cost > left:
                if left < _MIN_PART:
                    break
                item = preview(item, left, str_max, depth + 1)
                cost = json_cost(item, left, str_max, depth + 1)
            out[k] = item
            room = left - cost
            if cost > left or room < _MIN_PART:
                break
        if len(out) < len(value):
            out[ELLIPSIS] = f"+{len(value) - len(out)} more keys"
        return out
    items: list[Any] = []
    for item in value:
        left = room - 1
        cost = json_cost(item, left, str_max, depth + 1)
        if cost > left:
            if left < _MIN_PART:
                break
            item = preview(item, left, str_max, depth + 1)
            cost = json_cost(item, left, str_max, depth + 1)
        items.append(item)
        room = left - cost
        if room < _MIN_PART:
            break
    if len(items) < len(value):
        items.append(f"{ELLIPSIS} {len(value) - len(items)} more")
    return items


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"
    transient: ClassVar[bool] = False  # frequent ticks, not kept in the bus backlog
    # Tighter bounds for fields that carry what a peer sent: field -> (budget, str_max).
    bounds: ClassVar[dict[str, tuple[int, int]]] = {}
    ts: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # Events are made per request (two per command on each side): the common cases
        # (a short string, a number, a small flat dict or list) are decided without a call.
        values = self.__dict__
        for name, budget, str_max, short in _LIMITS.get(type(self)) or _limits(type(self)):
            value = values[name]
            kind = type(value)
            if kind is str:
                if len(value) <= short:
                    continue
            elif kind in _SCALARS:
                continue
            elif kind is dict or kind is list:
                if _flat_fits(value, budget, str_max):
                    continue
            elif not isinstance(value, str | list | tuple | dict):
                continue
            bounded = preview(value, budget, str_max)
            if bounded is not value:
                object.__setattr__(self, name, bounded)  # frozen: bounded once, here

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, **asdict(self)}


_LIMITS: dict[type[Event], tuple[tuple[str, int, int, int], ...]] = {}
_SCALARS = frozenset({int, float, bool, type(None)})  # exact types: a str subclass is not one


def _limits(cls: type[Event]) -> tuple[tuple[str, int, int, int], ...]:
    """(field, budget, str_max, longest string kept as is) of each field of an event class
    but its timestamp (cached)."""
    got = _LIMITS.get(cls)
    if got is None:
        got = _LIMITS[cls] = tuple(
            (f.name, budget, str_max, min(str_max, budget - 2))
            for f in fields(cls) if f.name != "ts"
            for budget, str_max in [cls.bounds.get(f.name, (FIELD_BUDGET, FIELD_STR_MAX))])
    return got


def _flat_fits(value: dict[Any, Any] | list[Any], budget: int, str_max: int) -> bool:
    """True when `value`, a dict or list of plain scalars and short strings (keys: short
    strings), costs at most `budget` as `json_cost` counts it; False when it does not or is
    not that simple (then `preview` decides). `json_cost` inlined for the common payload."""
    cost = 2
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str or len(key) > str_max:
                return False
            cost += len(key) + 3  # quotes, colon
            kind = type(item)
            if kind is str:
                if len(item) > str_max:
                    return False
                cost += len(item) + 3  # quotes, comma
            elif kind is int or kind is float:
                cost += 25
            elif item is None or kind is bool:
                cost += 6
            else:
                return False
            if cost > budget:
                return False
        return True
    for item in value:
        kind = type(item)
        if kind is str:
            if len(item) > str_max:
                return False
            cost += len(item) + 3
        elif kind is int or kind is float:
            cost += 25
        elif item is None or kind is bool:
            cost += 6
        else:
            return False
        if cost > budget:
            return False
    return True


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
    """Dial `attempt` to a bootstrap node (since it was lost, or since start) failed with
    `error` (a short reason: "connection refused"); the next try is in `retry_in` s."""

    kind: ClassVar[str] = "bootstrap_retry"
    bounds: ClassVar[dict[str, tuple[int, int]]] = {"error": (300, 300)}
    addr: str
    error: str
    retry_in: float
    attempt: int = 1


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
    bounds: ClassVar[dict[str, tuple[int, int]]] = {"addrs": (1024, 256)}  # from a provider record
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
class DialProgress(Event):
    """A dial by peer id, step by step: where its addresses were looked for (`tried`, in
    order: routing_table, peerstore, dht), which source named them (`found_in`, "" while
    the DHT is asked or when nothing did), then dialing, connected or failed (`error`)."""

    kind: ClassVar[str] = "dial"
    peer_id: str
    stage: str  # lookup / dialing / connected / failed
    tried: list[str] = field(default_factory=list)
    found_in: str = ""
    addrs: list[str] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class PeerDisconnected(Event):
    kind: ClassVar[str] = "disconnected"
    peer_id: str


@dataclass(frozen=True, kw_only=True)
class MessageSent(Event):
    """A command we sent: `args` is a preview (see `preview`), `size` its JSON bytes."""

    kind: ClassVar[str] = "message_sent"
    bounds: ClassVar[dict[str, tuple[int, int]]] = {
        "args": (PREVIEW_BUDGET, PREVIEW_STR_MAX), "command": (SHORT_TEXT, SHORT_TEXT)}
    peer_id: str
    id: str
    command: str
    args: dict[str, Any]
    size: int = 0


@dataclass(frozen=True, kw_only=True)
class Reply(Event):
    kind: ClassVar[str] = "reply"
    bounds: ClassVar[dict[str, tuple[int, int]]] = {
        "result": (PREVIEW_BUDGET, PREVIEW_STR_MAX), "error": (PREVIEW_BUDGET, PREVIEW_STR_MAX),
        "id": (SHORT_TEXT, SHORT_TEXT)}
    peer_id: str
    id: str
    ok: bool
    result: Any = None
    error: dict[str, str] | None = None
    rtt_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class MessageReceived(Event):
    """A peer's command: `args` is a preview (never the payload), `size` the frame's bytes."""

    kind: ClassVar[str] = "message_received"
    bounds: ClassVar[dict[str, tuple[int, int]]] = {
        "args": (PREVIEW_BUDGET, PREVIEW_STR_MAX), "command": (SHORT_TEXT, SHORT_TEXT),
        "id": (SHORT_TEXT, SHORT_TEXT), "sender": (SHORT_TEXT, SHORT_TEXT)}
    peer_id: str
    id: str
    command: str
    args: dict[str, Any]
    sender: str
    ok: bool = True
    size: int = 0


@dataclass(frozen=True, kw_only=True)
class DHTUpdated(Event):
    kind: ClassVar[str] = "dht_updated"
    size: int


@dataclass(frozen=True, kw_only=True)
class HolePunch(Event):
    """One DCUtR hole-punch session ended (outcome labels: punch_net.relay.outcomes.Outcome)."""

    kind: ClassVar[str] = "hole_punch"
    bounds: ClassVar[dict[str, tuple[int, int]]] = {"error": (300, 300)}
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
    """Something failed. `peer_id`: the peer it is about, if any; `repeats`: how many times
    the same failure has happened so far (see `RepeatLimiter`: said once, then rarely)."""

    kind: ClassVar[str] = "error"
    bounds: ClassVar[dict[str, tuple[int, int]]] = {"message": (600, 600)}
    message: str
    where: str = ""
    peer_id: str = ""
    repeats: int = 1


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
    """The web console is served at `url` (with ?token=..., required); `busy_port`: the
    port it should have had was taken, so it took a free one."""

    kind: ClassVar[str] = "web"
    url: str
    token: str = ""
    busy_port: int = 0


@dataclass(frozen=True, kw_only=True)
class WebExposed(Event):
    """The web console listens beyond this machine's loopback (an explicit --web-host)."""

    kind: ClassVar[str] = "web_exposed"
    host: str
    port: int



class RepeatLimiter:
    """Say a repeated failure once, then rarely: the first failure of a key is reported,
    later ones only once `gap` s have passed (the gap doubling up to `max_gap`), with the
    count so far ("still unreachable (12 times)"). Pure: the caller passes the clock. At
    most `max_keys` keys are remembered (the least recently failed are forgotten)."""

    def __init__(self, gap: float = 60.0, max_gap: float = 600.0, max_keys: int = 1024) -> None:
        self.gap = gap
        self.max_gap = max_gap
        self.max_keys = max_keys
        self._seen: dict[str, tuple[int, float, float]] = {}  # key -> (count, next report, gap)

    def hit(self, key: str, now: float) -> int | None:
        """Count one failure of `key`: the count to report now, or None to stay quiet."""
        count, due, gap = self._seen.pop(key, (0, now, self.gap / 2))
        count += 1
        report = now >= due
        if report:
            gap = min(gap * 2, self.max_gap)
            due = now + gap
        self._seen[key] = (count, due, gap)  # re-inserted: dict order = least recent first
        while len(self._seen) > self.max_keys:
            del self._seen[next(iter(self._seen))]
        return count if report else None

    def clear(self, key: str) -> None:
        """`key` works again: its next failure is reported at once."""
        self._seen.pop(key, None)


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
