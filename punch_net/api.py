"""The one API of a running node: commands, one snapshot type tree, an event stream.

Every front uses it: the CLI, the console (in-process or attached), `P2PClient`, the
control socket, metrics and the web view. Two implementations carry the same types:
`LocalNode` (punch_net/runtime.py, in-process) and `RemoteNode` (punch_net/ops/remote.py,
over the control socket, whose wire form is derived from the signatures below by
punch_net/ops/wire.py). No py-libp2p type appears here: peers are base58 strings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from punch_net.errors import CommandFailed, NoCandidates, NodeError, NotRunning
from punch_net.events import Event
from punch_net.relay.status import RelayStatus
from punch_net.torrent.info import CatalogueEntry, TransferInfo, TransferPeer

# Parts of a snapshot; a front asks for the ones it shows.
SNAPSHOT_PARTS = ("stats", "listen_addrs", "connections", "routing", "relay", "transfers", "reputation",
                  "capabilities", "network")

JSONObject = dict[str, object]  # command arguments and results: JSON, checked where used


# ---------------------------------------------------------------- snapshot tree


@dataclass(frozen=True)
class StreamInfo:
    protocol: str
    direction: str


@dataclass(frozen=True)
class ConnectionInfo:
    peer_id: str
    direction: str
    remote_addr: str
    transport: str  # "direct" or "relayed"
    security: str
    muxer: str
    streams: list[StreamInfo]
    rtt_ms: float | None
    since: float
    agent: str
    via: str = "direct"  # direct / relay / hole_punch


@dataclass(frozen=True)
class RoutingPeer:
    peer_id: str
    cpl: int
    last_seen: float
    connected: bool
    agent: str
    addrs: list[str]


@dataclass(frozen=True)
class RoutingBucket:
    cpl: int
    peers: list[RoutingPeer]


@dataclass(frozen=True)
class RoutingTableInfo:
    size: int
    buckets: list[RoutingBucket]
    mode: str
    last_refresh: float | None


@dataclass(frozen=True)
class Stats:
    """Counters since start; bytes are wire bytes of every connection, closed ones included."""

    role: str
    peer_id: str
    uptime_s: float
    connections: int
    routing_table_size: int
    events_dropped: int
    messages_in: int = 0
    messages_out: int = 0
    replies: int = 0
    errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    dial_errors: int = 0
    rejected: int = 0
    lookups: int = 0  # DHT operations (provide, find providers) finished
    lookup_failures: int = 0
    lookup_ms: float = 0.0  # their durations added up: Δlookup_ms / Δlookups is the mean latency


@dataclass(frozen=True)
class Snapshot:
    """Everything a console shows. A part is None when it was not asked for or this node's
    role does not run it (no relay, no transfers, not a monitor)."""

    ts: float
    stats: Stats | None = None
    listen_addrs: list[str] = field(default_factory=list)
    connections: list[ConnectionInfo] = field(default_factory=list)
    routing: RoutingTableInfo | None = None
    relay: RelayStatus | None = None
    transfers: list[TransferInfo] | None = None
    reputation: list[JSONObject] | None = None
    capabilities: JSONObject | None = None
    network: JSONObject | None = None
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- command results


@dataclass(frozen=True)
class NodeInfo:
    peer_id: str
    role: str
    listen_addrs: list[str]
    pid: int
    version: str
    components: list[str]  # what this role runs: relay, torrent, monitor, ...


@dataclass(frozen=True)
class PeerAddrs:
    peer_id: str
    addrs: list[str]


@dataclass(frozen=True)
class Reply:
    """A peer's answer to one command (ok, or its error code and message)."""

    id: str
    ok: bool
    result: object = None
    error_code: str = ""
    error_message: str = ""
    rtt_ms: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """One scored peer: `parts` are the normalised inputs, `score` their weighted mean."""

    peer_id: str
    score: float
    parts: dict[str, float]
    known: dict[str, bool]  # which parts came from real data (False: neutral 0.5)
    rtt_ms: float | None = None


@dataclass(frozen=True)
class RouteResult:
    peer_id: str
    result: object
    attempts: list[JSONObject] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)


# ---------------------------------------------------------------- DHT diagnostics and health


@dataclass(frozen=True)
class DHTProvideResult:
    """`dht_provide`: did the announcement reach the closest peers, and how long it took."""

    ok: bool
    ms: float


@dataclass(frozen=True)
class LookupStep:
    """One GET_PROVIDERS query of a traced lookup: where its time went."""

    peer: str  # the last 8 characters of the peer id (enough to tell the peers of one lookup apart)
    connected: bool  # already connected when asked (else the stream open included a dial)
    at_ms: float  # since the lookup started
    open_ms: float  # stream open (a dial if not connected)
    rpc_ms: float | None  # request/response; None if the query failed before it
    total_ms: float
    providers: int = 0
    closer: int = 0
    error: str = ""  # the exception's class name when the query failed


@dataclass(frozen=True)
class ProviderLookup:
    """`dht_find_providers`: providers found (peer ids, sorted) and the lookup's figures.
    `hops`: the hop whose answer named a provider (0: we held the record; None: no query
    answered with one). `steps` and the loop-lag figures only with `trace=True`."""

    providers: list[str]
    ms: float
    hops: int | None
    queries: int
    steps: list[LookupStep] | None = None
    lag_max_ms: float | None = None  # the longest our event loop woke a 5 ms sleeper late
    lag_total_ms: float | None = None  # all those late wake-ups added up


@dataclass(frozen=True)
class RefreshResult:
    """`dht_refresh`: the routing table before and after one forced refresh, and how many
    of our provider records were announced again."""

    before: int
    after: int
    evicted_clients: int
    lookups: int
    ms: float
    reprovided: int


@dataclass(frozen=True)
class ConnManagerStats:
    low: int
    high: int
    grace_s: float
    pruned: int
    last_trim: float | None


@dataclass(frozen=True)
class Health:
    """`health`: the process and the node in one cheap answer (no network)."""

    peer_id: str
    role: str
    pid: int
    rss_bytes: int
    uptime_s: float
    connections: int  # connected peers
    routing_table_size: int
    bootstrapped: bool
    connmgr: ConnManagerStats
    dial_errors: int


# ---------------------------------------------------------------- the API


class NodeAPI(Protocol):
    """A running node. Every method may raise NodeError (one line for humans)."""

    async def info(self) -> NodeInfo: ...

    async def snapshot(self, parts: list[str] | None = None) -> Snapshot: ...

    def events(self, replay: bool = True) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Live events; with `replay`, the bounded backlog first (what happened before you came)."""
        ...

    async def dial(self, addr: str) -> str:
        """Connect to a multiaddr (`/p2p/ID` optional; a `/p2p-circuit` address goes through
        its relay) or to a bare peer id (looked up in the routing table, the peerstore, then
        the DHT; each step is published as an `events.DialProgress`); returns the peer id."""
        ...

    async def disconnect(self, peer: str) -> None: ...

    async def find_peers(self, namespace: str, timeout: float | None = None) -> list[PeerAddrs]: ...

    async def provide(self, namespace: str) -> bool: ...

    async def request(self, peer: str, command: str, args: JSONObject | None = None,
                      timeout: float | None = None) -> Reply: ...

    async def send_best(self, namespace: str, command: str, args: JSONObject | None = None,
                        timeout: float | None = None) -> RouteResult: ...

    async def rank(self, namespace: str) -> list[Candidate]: ...

    async def ping(self, peer: str, timeout: float = 5.0) -> float:
        """Round trip in seconds (libp2p ping, timed here)."""
        ...

    async def reputation(self, peer: str | None = None) -> list[JSONObject]:
        """Our reputation of every known peer, or of one peer (a list of one)."""
        ...

    async def relay_status(self) -> RelayStatus: ...

    async def relay_reserve(self, relay: str) -> RelayStatus:
        """Hold a reservation on the relay at this multiaddr from now on (as `--relay`):
        others can then reach us at a `/p2p-circuit` address through it."""
        ...

    async def relay_release(self, relay: str) -> RelayStatus:
        """Give the reservation on that relay up (its circuit addresses go)."""
        ...

    async def transfers(self) -> list[TransferInfo]: ...

    async def torrent_add(self, info_hash: str) -> TransferInfo: ...

    async def torrent_pause(self, info_hash: str) -> None: ...

    async def torrent_resume(self, info_hash: str) -> None: ...

    async def torrent_cancel(self, info_hash: str) -> None: ...

    async def torrent_verify(self, info_hash: str) -> list[int]:
        """Re-hash the file; returns the bad pieces."""
        ...

    async def torrent_catalogue(self, timeout: float | None = None) -> list[CatalogueEntry]: ...

    async def dht_provide(self, key: str) -> DHTProvideResult:
        """Announce ourselves as a provider of `key` (any text: its sha2-256 multihash is
        the DHT key, as for a namespace), bounded by 30 s."""
        ...

    async def dht_find_providers(self, key: str, count: int = 20, timeout: float = 10.0,
                                 trace: bool = False) -> ProviderLookup:
        """Look up the providers of `key` until `count` are found or `timeout` (at most
        30 s) passes (kubo's `ipfs routing findprovs`); `trace` adds each query's timing."""
        ...

    async def dht_refresh(self) -> RefreshResult:
        """Refresh every region of the routing table now, then announce our provider
        records again."""
        ...

    async def health(self) -> Health: ...


# Request/response commands, in the order above: what the control socket serves and
# RemoteNode forwards (events are a stream, handled apart).
API_METHODS = ("info", "snapshot", "dial", "disconnect", "find_peers", "provide", "request", "send_best",
               "rank", "ping", "reputation", "relay_status", "relay_reserve",
               "relay_release", "transfers", "torrent_add", "torrent_pause",
               "torrent_resume", "torrent_cancel", "torrent_verify", "torrent_catalogue", "dht_provide",
               "dht_find_providers", "dht_refresh", "health")


__all__ = [
    "API_METHODS", "SNAPSHOT_PARTS", "Candidate", "CommandFailed", "ConnManagerStats", "ConnectionInfo",
    "DHTProvideResult", "Health", "JSONObject", "LookupStep", "NoCandidates", "NodeAPI", "NodeError", "NodeInfo",
    "NotRunning", "PeerAddrs", "ProviderLookup", "RefreshResult", "Reply", "RouteResult", "RoutingBucket",
    "RoutingPeer", "RoutingTableInfo", "Snapshot", "Stats", "StreamInfo", "TransferInfo", "TransferPeer",
]
