"""DHT hygiene for networks of hundreds of nodes: the py-libp2p fixes applied to one
node's DHT, a periodic routing-table refresh, and lookup tracing (hops per lookup).

- α = 3 concurrent queries, k = 20 (workarounds.limit_kad_concurrency; k is the library's).
- Only kad servers enter the routing table; client-mode peers are evicted
  (workarounds.install_server_only_routing / evict_client_peers).
- A peer that fails a query and is not connected is removed (install_dead_peer_eviction).
- No blind dialing of peerstore entries (workarounds.disable_auto_connector).
- Every `refresh_interval` seconds (jittered so a testnet does not refresh in step) we
  look ourselves up, then one random key per common-prefix length (CPL) with our key that
  the self-lookup did not already cover and no lookup of ours visited lately, as
  go-libp2p's refresh manager does (`refresh_cpls`); while refreshes change nothing the
  interval doubles up to 10 minutes (`next_interval`).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from libp2p.kad_dht.common import MAX_DHT_MESSAGE_SIZE, QUERY_TIMEOUT
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.kad_dht.routing_table import peer_id_to_key
from libp2p.kad_dht.utils import maybe_consume_signed_record
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from punch_net.p2p.workarounds import (
    disable_auto_connector,
    evict_client_peers,
    install_dead_peer_eviction,
    install_server_only_routing,
    limit_kad_concurrency,
)

if TYPE_CHECKING:
    from punch_net.node import Node

DEFAULT_REFRESH_INTERVAL = 120.0
REFRESH_LOOKUP_TIMEOUT = 15.0
MAX_REFRESH_INTERVAL = 600.0  # a quiet table is refreshed at least this often
MAX_BUCKET_LOOKUPS = 8  # CPL lookups per refresh, at most
MAX_REFRESH_CPL = 15  # go-libp2p's maxCplForRefresh
KEY_BITS = 256


@dataclass
class LookupTrace:
    """Hop depth of every peer a lookup learned about: the peers we start from are hop 1,
    peers they return are hop 2, and so on. `found_at` is the hop that answered with a
    provider (0: we had the record ourselves)."""

    depth: dict[ID, int] = field(default_factory=dict)
    queries: int = 0
    found_at: int | None = None
    max_hop: int = 0
    # With trace_lookup(detail=True): one entry per GET_PROVIDERS query (where its time went).
    steps: list[dict[str, Any]] | None = None
    started: float = field(default_factory=time.perf_counter)

    def hop(self, peer: ID) -> int:
        return self.depth.get(peer, 1)

    def step(self, **fields: Any) -> None:
        if self.steps is not None:
            self.steps.append(fields)


_trace: ContextVar[LookupTrace | None] = ContextVar("punch_lookup_trace", default=None)


@contextmanager
def trace_lookup(detail: bool = False) -> Iterator[LookupTrace]:
    """Trace the DHT queries made inside this block (trio child tasks inherit it); with
    `detail`, also each query's timing: was the peer connected, stream open (a dial if
    not), request/response, and when it started (`LookupTrace.steps`)."""
    trace = LookupTrace(steps=[] if detail else None)
    token = _trace.set(trace)
    try:
        yield trace
    finally:
        _trace.reset(token)


def _install_tracing(dht: Any) -> None:
    routing, store = dht.peer_routing, dht.provider_store
    query_closest = routing._query_peer_for_closest
    query_providers = store._get_providers_from_peer_with_closers

    def note(peer: ID, learned: list[ID]) -> int:
        trace = _trace.get()
        if trace is None:
            return 0
        hop = trace.hop(peer)
        trace.queries += 1
        trace.max_hop = max(trace.max_hop, hop)
        for p in learned:
            trace.depth.setdefault(p, hop + 1)
        return hop

    async def closest(peer: ID, key: bytes) -> list[ID]:
        result = await query_closest(peer, key)
        note(peer, list(result))
        return list(result)

    async def providers(peer: ID, key: bytes) -> tuple[list[Any], list[ID]]:
        found, closer = await query_providers(peer, key)
        hop = note(peer, list(closer))
        trace = _trace.get()
        if found and trace is not None and (trace.found_at is None or hop < trace.found_at):
            trace.found_at = hop
        return found, closer

    routing._query_peer_for_closest = closest
    store._get_providers_from_peer_with_closers = providers


def install(host: Any, dht: Any) -> None:
    """Apply every scale fix to a freshly built host and DHT (before the host runs)."""
    limit_kad_concurrency()
    disable_auto_connector(host)
    install_server_only_routing(host, dht)
    dht.provider_store._get_providers_from_peer_with_closers = _get_providers_query(host, dht)
    install_dead_peer_eviction(host, dht)
    _install_tracing(dht)
    dht.provider_store.find_providers = _provider_walk(dht)
    _install_lookup_memory(dht)


# ---------------------------------------------------------------------- provider lookups

LOOKUP_ALPHA = 3  # queries in flight (the spec's α)
LOOKUP_K = 20  # a walk ends when the k closest peers it knows have all answered
LOOKUP_MAX_QUERIES = 60  # a bound on one walk, whatever the network answers
DIAL_HOLD = 0.25  # s a query on an open connection holds back the walk's dials (see _provider_walk)
CLOSER_ADDR_TTL = 3600


async def find_providers(dht: Any, key: bytes, count: int, *, timeout: float,
                         on_provider: Callable[[PeerInfo], None] | None = None) -> list[PeerInfo]:
    """Run the provider walk `install` put on `dht` (see `_provider_walk`), keeping what it
    found by `timeout` and handing each provider to `on_provider` as it is named."""
    walk = dht.provider_store.find_providers
    return list(await walk(key, count, timeout=timeout, on_provider=on_provider))


def _get_providers_query(host: Any, dht: Any) -> Any:
    """GET_PROVIDERS to one peer that keeps the closer peers' addresses.

    py-libp2p's `_get_providers_from_peer_with_closers` returns closer peers as bare ids
    and drops their addresses, so a walk made of GET_PROVIDERS alone cannot dial them;
    that is why its `find_providers` first runs a whole FIND_NODE lookup and only then
    asks for providers (two lookups, the first to convergence). Same message, same
    signed-record checks; the addresses go into the peerstore as FIND_NODE's do."""
    store = host.get_peerstore()
    me = host.get_id()

    async def query(peer_id: ID, key: bytes) -> tuple[list[PeerInfo], list[ID]]:
        providers: list[PeerInfo] = []
        closer: list[ID] = []
        trace = _trace.get()
        t0 = time.perf_counter()
        connected = bool(host.get_network().get_connections(peer_id))
        t_open = t_rpc = t0
        try:
            stream = await host.new_stream(peer_id, [KAD_PROTOCOL])
            t_open = time.perf_counter()
            try:
                msg = Message()
                msg.type = Message.MessageType.GET_PROVIDERS
                msg.key = key
                msg.senderRecord = env_to_send_in_RPC(host)[0]
                await stream.write(encode_varint_prefixed(msg.SerializeToString()))
                response = Message()
                response.ParseFromString(await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE))
                t_rpc = time.perf_counter()
            finally:
                await stream.close()
        except Exception as exc:
            if trace is not None:
                trace.step(peer=str(peer_id)[-8:], connected=connected, at_ms=_ms(t0 - trace.started),
                           open_ms=_ms(t_open - t0), rpc_ms=_ms(t_rpc - t_open) if t_rpc > t0 else None,
                           total_ms=_ms(time.perf_counter() - t0), error=type(exc).__name__)
            return [], []
        if trace is not None:
            trace.step(peer=str(peer_id)[-8:], connected=connected, at_ms=_ms(t0 - trace.started),
                       open_ms=_ms(t_open - t0), rpc_ms=_ms(t_rpc - t_open), total_ms=_ms(time.perf_counter() - t0),
                       providers=len(response.providerPeers), closer=len(response.closerPeers))
        if response.type != Message.MessageType.GET_PROVIDERS:
            return [], []
        if not maybe_consume_signed_record(response, host, peer_id):
            return [], []
        for proto in response.providerPeers:
            try:
                if record_acceptable(proto, host):
                    providers.append(PeerInfo(ID(proto.id), _addrs(proto.addrs)))
            except Exception:
                continue
        for proto in response.closerPeers:
            try:
                if not proto.id or not record_acceptable(proto, host):
                    continue
                peer = ID(proto.id)
            except Exception:
                continue
            if peer == me:
                continue
            addrs = _addrs(proto.addrs)
            if addrs:
                store.add_addrs(peer, addrs, CLOSER_ADDR_TTL)
            closer.append(peer)
        return providers, closer

    return query


def record_acceptable(proto: Any, host: Any) -> bool:
    """May a peer named in a DHT answer be used? Its signed peer record, if any, is
    stored when newer than ours; False only when it is forged or names another peer.

    py-libp2p's check (`maybe_consume_signed_record`) also refuses a record older than the
    one we hold, and its callers then drop the peer: a node whose addresses changed (a
    relay reservation came or went) vanished from the answers of every node that had
    cached its older record, for everyone who had talked to it since."""
    if maybe_consume_signed_record(proto, host):
        return True
    try:
        envelope, record = consume_envelope(proto.signedRecord, "libp2p-peer-record")
        if record.peer_id.to_bytes() != proto.id or ID.from_pubkey(envelope.public_key) != record.peer_id:
            return False
        held = host.get_peerstore().get_peer_record(record.peer_id)
        return held is not None and held.record().seq > record.seq
    except Exception:
        return False


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _addrs(raw: Any) -> list[Multiaddr]:
    out = []
    for item in raw:
        try:
            out.append(Multiaddr(item))
        except Exception:
            continue
    return out


def _provider_walk(dht: Any) -> Any:
    """`find_providers` as one GET_PROVIDERS walk that stops at `count` providers.

    py-libp2p 0.8.1 runs a full FIND_NODE lookup to convergence, then asks the closest
    peers for providers in lock-step batches of α, each batch waiting for its slowest
    peer. Here (as go-libp2p's FindProvidersAsync does) every GET_PROVIDERS answer both
    may carry providers and brings closer peers, α queries stay in flight (a new one
    starts as soon as one returns), and the walk ends at `count` providers, when the
    LOOKUP_K closest known peers have all answered, or after LOOKUP_MAX_QUERIES.

    Among the LOOKUP_K closest candidates, peers we are already connected to are asked
    first, and while such a query is in flight (at most DIAL_HOLD seconds) no dial starts:
    any of the k closest peers holds the record, a query on an open connection costs a
    stream, and a dial costs TCP, Noise, yamux and identify on both sides (at 200 nodes on
    two cores, 90 ms against 25 ms at p50). Dials that would be cancelled the moment a
    connected peer answers are not started at all. The walk still ends only when the
    LOOKUP_K closest known peers have answered, so it finds what it found before.

    The walk is not all-or-nothing: each provider goes to `on_provider` the moment an
    answer names it, and a walk stopped by `timeout` returns what it found so far. A
    silent peer among the closest holds a walk for its whole dial or query deadline; a
    caller that cancelled the walk from outside lost the provider named in the first
    answer (a download then saw "no provider found" while one was a query away)."""
    store = dht.provider_store
    me = dht.local_peer_id
    network = dht.host.get_network()

    def is_connected(peer: ID) -> bool:
        try:
            return bool(network.get_connections(peer))
        except Exception:
            return False

    async def find_providers(key: bytes, count: int = 20, *, timeout: float | None = None,
                             on_provider: Callable[[PeerInfo], None] | None = None) -> list[PeerInfo]:
        found: dict[ID, PeerInfo] = {}

        def add(info: PeerInfo) -> None:
            known = found.get(info.peer_id)
            if known is not None:  # named again: keep every address we were told
                known.addrs.extend(a for a in info.addrs if a not in known.addrs)
                return
            found[info.peer_id] = PeerInfo(info.peer_id, list(info.addrs))
            if on_provider is not None:
                on_provider(found[info.peer_id])

        # What we already know counts, but does not end the walk short of `count`: a
        # catalogue or a download asks again to find providers that joined since.
        for info in store.get_providers(key):
            add(info)
        if len(found) >= count:
            return list(found.values())[:count]
        target = int.from_bytes(hashlib.sha256(key).digest(), "big")
        distance: dict[ID, int] = {}

        def learn(peer: ID) -> None:
            if peer != me and peer not in distance:
                distance[peer] = int.from_bytes(peer_id_to_key(peer), "big") ^ target

        for peer in dht.routing_table.find_local_closest_peers(key, LOOKUP_K):
            learn(peer)
        queried: set[ID] = set()
        in_flight = 0
        warm: dict[ID, float] = {}  # queries in flight on open connections: when each started
        changed = trio.Event()

        async def ask(peer: ID) -> None:
            nonlocal in_flight
            providers: list[PeerInfo] = []
            closer: list[ID] = []
            try:
                with trio.move_on_after(QUERY_TIMEOUT):
                    providers, closer = await store._get_providers_from_peer_with_closers(peer, key)
            except Exception:
                pass
            finally:
                in_flight -= 1
                warm.pop(peer, None)
            named: list[PeerInfo] = []
            try:
                for info in providers:
                    store.add_provider(key, info)  # remembered: the next lookup starts with it
                    named.append(info)
                for p in closer:
                    learn(p)
            except Exception:  # a malformed answer spoils this query, not the walk
                pass
            finally:
                changed.set()
            for info in named:
                add(info)

        def start(nursery: trio.Nursery, peer: ID, connected: bool) -> None:
            nonlocal in_flight
            queried.add(peer)
            in_flight += 1
            if connected:
                warm[peer] = trio.current_time()
            nursery.start_soon(ask, peer)

        with trio.move_on_after(math.inf if timeout is None else timeout):  # keeps what it found
            async with trio.open_nursery() as nursery:
                while len(found) < count:
                    closest = sorted(distance, key=distance.__getitem__)[:LOOKUP_K]
                    pending = [p for p in closest if p not in queried]
                    live = [p for p in pending if is_connected(p)]
                    cold = [p for p in pending if p not in live]
                    while live and in_flight < LOOKUP_ALPHA and len(queried) < LOOKUP_MAX_QUERIES:
                        start(nursery, live.pop(0), True)
                    hold_until = min(warm.values(), default=-math.inf) + DIAL_HOLD
                    wait = hold_until - trio.current_time() if cold else math.inf
                    if wait <= 0:
                        while cold and in_flight < LOOKUP_ALPHA and len(queried) < LOOKUP_MAX_QUERIES:
                            start(nursery, cold.pop(0), False)
                        wait = math.inf
                    if in_flight == 0:
                        break  # nothing left to ask (or the query budget is spent)
                    changed = trio.Event()
                    with trio.move_on_after(wait):  # a held dial goes ahead after DIAL_HOLD
                        await changed.wait()
                nursery.cancel_scope.cancel()
        return list(found.values())[:count]

    return find_providers


# ---------------------------------------------------------------------- refresh


def key_cpl(a: bytes, b: bytes) -> int:
    """Common prefix length of two 256-bit keys (KEY_BITS if equal)."""
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return KEY_BITS - x.bit_length()


def target_with_cpl(me: bytes, cpl: int) -> bytes | None:
    """Random lookup target whose key (its sha256: every lookup hashes its target) shares
    exactly `cpl` leading bits with `me`. A preimage search, as go-libp2p's refresh does
    with peer ids: 2^(cpl+1) hashes on average; None if unlucky within a bound (at most
    2^18 hashes, ~0.25 s, reached only for CPLs of networks with millions of nodes)."""
    for _ in range(1 << min(cpl + 5, 18)):
        candidate = os.urandom(32)
        if key_cpl(hashlib.sha256(candidate).digest(), me) == cpl:
            return candidate
    return None


def _lookup_memory(dht: Any) -> dict[int, float]:
    memory: dict[int, float] | None = getattr(dht, "_punch_lookup_cpls", None)
    if memory is None:
        memory = {}
        dht._punch_lookup_cpls = memory
    return memory


def _note_lookup(dht: Any, target: bytes) -> None:
    """A lookup for `target` finished: the CPL region it lies in counts as refreshed."""
    me = peer_id_to_key(dht.local_peer_id)
    _lookup_memory(dht)[key_cpl(hashlib.sha256(target).digest(), me)] = time.monotonic()


def _install_lookup_memory(dht: Any) -> None:
    """Remember when our lookups (provides, provider walks, refreshes) visited each CPL
    region, so a refresh skips regions visited within its interval (go-libp2p's
    RtRefreshManager tracks the same per CPL)."""
    routing, store = dht.peer_routing, dht.provider_store
    closest, find = routing.find_closest_peers_network, store.find_providers

    async def find_closest_peers_network(target: bytes, count: int = 20) -> list[ID]:
        result = await closest(target, count)
        if result:
            _note_lookup(dht, target)
        return list(result)

    async def find_providers(key: bytes, count: int = 20, **options: Any) -> list[PeerInfo]:
        found = await find(key, count, **options)
        _note_lookup(dht, key)
        return list(found)

    routing.find_closest_peers_network = find_closest_peers_network
    store.find_providers = find_providers


def refresh_cpls(me: bytes, nearest: list[bytes], k: int, visited: dict[int, float], now: float,
                 max_age: float) -> list[int]:
    """Which CPL regions a refresh looks up after its self-lookup found `nearest` (keys).

    Keys sharing exactly c leading bits with ours are at distance [2^(255-c), 2^(256-c)).
    Once that whole range lies within the self-lookup's k-th distance, the self-lookup
    has already seen every peer there (fewer than k found: it saw the whole network), so
    this and deeper regions need no lookup of their own. A region visited by one of our
    lookups less than `max_age` ago is skipped too."""
    if len(nearest) < k:
        return []
    mine = int.from_bytes(me, "big")
    radius = max(mine ^ int.from_bytes(key, "big") for key in nearest)
    out = []
    for cpl in range(MAX_REFRESH_CPL + 1):
        if (1 << (KEY_BITS - cpl)) - 1 <= radius:
            break
        if now - visited.get(cpl, -math.inf) < max_age:
            continue
        out.append(cpl)
    return out[:MAX_BUCKET_LOOKUPS]


async def refresh(node: Node, timeout: float = REFRESH_LOOKUP_TIMEOUT,
                  max_age: float = DEFAULT_REFRESH_INTERVAL) -> dict[str, Any]:
    """One routing-table refresh: evict client peers, look ourselves up, then one random
    key per CPL region the self-lookup did not cover and no lookup of ours visited in
    the last `max_age` seconds (`refresh_cpls`). Bounded in time; returns what changed.

    py-libp2p's own refresh looks up `gen_random_key_in_bucket(bucket)`, but lookups hash
    their target, so those keys land anywhere but in the bucket: random lookups. Here each
    target is chosen so that its hash is in the region meant."""
    dht = node.dht
    start = time.perf_counter()
    before = dht.get_routing_table_size()
    evicted = evict_client_peers(node.host, dht)
    me = peer_id_to_key(node.peer_id)
    lookups = 0
    with trio.move_on_after(timeout):
        nearest: list[ID] = []
        try:
            nearest = list(await dht.peer_routing.find_closest_peers_network(node.peer_id.to_bytes()))
        except Exception:
            pass
        lookups += 1
        plan = refresh_cpls(me, [peer_id_to_key(p) for p in nearest], LOOKUP_K, _lookup_memory(dht),
                            time.monotonic(), max_age)
        for cpl in plan:
            target = target_with_cpl(me, cpl)
            if target is None:
                continue
            try:
                await dht.peer_routing.find_closest_peers_network(target)
            except Exception:
                pass
            lookups += 1
    node.last_refresh = time.time()
    return {
        "before": before,
        "after": dht.get_routing_table_size(),
        "evicted_clients": evicted,
        "lookups": lookups,
        "ms": round((time.perf_counter() - start) * 1000, 1),
    }


def next_interval(current: float, base: float, result: dict[str, Any]) -> float:
    """After a refresh: back to `base` if the table shrank or held client peers (churn), else twice as
    long, up to MAX_REFRESH_INTERVAL (kubo refreshes every 10 minutes). A refresh is up
    to 1 + MAX_BUCKET_LOOKUPS lookups with new dials; in a quiet network of hundreds of
    nodes on two cores, refreshing every 2 minutes for ever was most of the idle load."""
    if result.get("after", 0) < result.get("before", 0) or result.get("evicted_clients"):
        return base
    return min(current * 2, max(base, MAX_REFRESH_INTERVAL))


async def maintain(node: Node, interval: float = DEFAULT_REFRESH_INTERVAL) -> None:
    """Refresh the routing table every `interval` seconds (±20 %, backing off while
    nothing changes: `next_interval`) until cancelled. Regions our own lookups visited
    within the last half interval are not looked up again (`refresh_cpls`)."""
    if interval <= 0:
        await trio.sleep_forever()
    await node.bootstrapped.wait()
    current = interval
    first = True
    while True:
        await trio.sleep(refresh_delay(current, first))
        first = False
        current = next_interval(current, interval, await refresh(node, max_age=current / 2))


def refresh_delay(interval: float, first: bool, rng: random.Random | None = None) -> float:
    """Seconds until the next refresh: `interval` ±20 %, but the first one anywhere in
    0.5-1.5 × `interval`. Nodes that start together (a testnet, a restart after an outage)
    would otherwise all refresh within the same minute: at 200 nodes on two cores that
    wave kept both cores busy for a minute and pushed connection counts towards the cap."""
    draw = (rng or random).uniform
    return interval * (draw(0.5, 1.5) if first else draw(0.8, 1.2))
