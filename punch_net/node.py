"""The kernel: one libp2p host's lifecycle, bootstrap, command sessions and snapshots.

It imports no service. Components (relay, connection manager, DHT refresh, reputation,
metrics, torrent, ...) are composed per role in punch_net/runtime.py and plug in
through the small interfaces below (`Component`, `CircuitRouter`, the observers); the
fronts reach a node through punch_net/api.py, never through this class.
"""

from __future__ import annotations

import hashlib
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.keys import KeyPair
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service
from trio_typing import TaskStatus  # trio-stubs (via py-libp2p) hide trio.TaskStatus from mypy

from punch_net import events as ev
from punch_net.api import (
    CommandFailed,
    ConnectionInfo,
    NodeError,
    RoutingBucket,
    RoutingPeer,
    RoutingTableInfo,
    Stats,
    StreamInfo,
)
from punch_net.config import NodeConfig
from punch_net.dht import walk as dht_walk
from punch_net.dht.keys import dht_key, namespace_cid, namespace_multihash
from punch_net.messaging import codec
from punch_net.messaging.commands import Call, CommandRegistry
from punch_net.messaging.protocol import (
    CommandServer,
    CommandSession,
    ServeHooks,
    SessionClosed,
)
from punch_net.p2p.addresses import (
    AddressError,
    AdvertisedAddrs,
    DialTarget,
    is_peer_id,
    parse_dial_target,
    resolve_dns,
)
from punch_net.p2p.failures import failure_reason
from punch_net.p2p.helpers import (
    connection_bytes,
    dedupe_providers,
    dial_in_order,
    direct_tcp_addrs,
    learn_peer_id,
    push_identify,
)
from punch_net.p2p.host import ListenError, build_host, check_port_free
from punch_net.p2p.identity import load_or_create_identity, new_identity
from punch_net.p2p.patches import forget_dial_failure, install_dht, install_limits
from punch_net.rcmgr import ResourceManager
from punch_net.rcmgr.memory import trim_after_bursts

BOOTSTRAP_CHECK_INTERVAL = 30.0  # connected: look again this often (a lost connection wakes us at once)
BOOTSTRAP_RETRY_FIRST = 0.5
BOOTSTRAP_RETRY_MAX = 2.0  # while a bootstrap node is down, so we are back ~2 s after it returns
BOOTSTRAP_HEALTHY_TABLE = 8  # routing-table size from which a lost bootstrap link is not urgent
BOOTSTRAP_STABLE = 60.0  # a link that lived less than this was likely pruned by a busy bootstrap node
BOOTSTRAP_PRUNED_WAIT = 30.0  # ... then (with a healthy table) wait before redialing, doubling
BOOTSTRAP_PRUNED_MAX_WAIT = 300.0
IDENTIFY_WAIT = 5.0
PROVIDERS_WANTED = 20  # a provider walk ends once it has this many (the spec's k)

@dataclass
class Counters:
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
    lookups: int = 0  # DHT provide / find-providers operations finished
    lookup_failures: int = 0
    lookup_ms: float = 0.0  # their durations added up (a console plots the mean per interval)


class Component(Protocol):
    """A service composed into a node (punch_net/runtime.py): `attach` before the host
    listens (install protocol handlers, notifees), `run` in the node's nursery after."""

    def attach(self, host: IHost, dht: KadDHT) -> None: ...

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


class CircuitRouter(Protocol):
    """NAT traversal (punch_net/relay/manager.py): relayed dials and how a connection came."""

    def on_connected(self, conn: INetConn) -> str: ...

    def on_disconnected(self, conn: INetConn) -> None: ...

    def via_of(self, conn: INetConn) -> str: ...

    def wants_relay(self, info: PeerInfo) -> bool: ...

    async def connect(self, info: PeerInfo) -> object: ...

    async def dial_circuit(self, addr: str) -> ID: ...


class RequestObserver(Protocol):
    """Told how each command to a peer went (reputation)."""

    def record_success(self, peer: ID, latency_ms: float) -> None: ...

    def record_failure(self, peer: ID) -> None: ...

    def record_timeout(self, peer: ID) -> None: ...


class LookupObserver(Protocol):
    """Told how long each DHT operation took (metrics)."""

    def dht_lookup(self, op: str, seconds: float, ok: bool) -> None: ...


class ConnectionObserver(Protocol):
    """Told of each new connection (connection manager, metrics)."""

    def connection_opened(self, conn: INetConn) -> None: ...

    def connection_closed(self, conn: INetConn) -> None: ...


@dataclass
class _PeerMeta:
    rtt_ms: float | None = None
    agent: str = ""
    via: str = "direct"


def _sha_key(peer_id: ID) -> int:
    return int.from_bytes(hashlib.sha256(peer_id.to_bytes()).digest(), "big")


def common_prefix_length(a: ID, b: ID) -> int:
    """Kademlia CPL of two peers' keys (sha256 of the peer id bytes)."""
    x = _sha_key(a) ^ _sha_key(b)
    return 256 - x.bit_length()


class _Notifee(INotifee):
    """Turns swarm callbacks into node events; never blocks the swarm."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.node._on_connected(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.node._on_disconnected(conn)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


class Node:
    """The kernel of a Punch node. Create, register components, then `await node.run()`
    inside a nursery (or `nursery.start(node.run)` to wait until it listens)."""

    def __init__(
        self,
        config: NodeConfig,
        registry: CommandRegistry | None = None,
        key_pair: KeyPair | None = None,
    ) -> None:
        self.config = config
        self.bus = ev.EventBus()
        self.registry = registry or CommandRegistry()
        self.counters = Counters()
        self.resources = ResourceManager(config.limits)  # punch_net/rcmgr: limits on what peers make us hold
        self._traffic_seen: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
        self.started_at = time.time()
        # What we advertise (announced, observed, port-mapped, listen): host.get_addrs()'s factory.
        self.addresses = AdvertisedAddrs(config.announce, config.no_announce)
        self.addresses.on_change(self._advertised_changed)
        self._key_pair = key_pair
        self._host: IHost | None = None
        self._dht: KadDHT | None = None
        self._nursery: trio.Nursery | None = None
        self._sessions: dict[ID, CommandSession] = {}
        self._session_locks: dict[ID, trio.Lock] = {}
        self._peer_meta: dict[ID, _PeerMeta] = {}
        # The routing-table size last published: a bootstrap dial and its connection
        # callback both add the same peer, concurrently; one DHTUpdated says it once.
        self._table_size_published = 0
        self._discovered: set[tuple[str, ID]] = set()
        self.bootstrap_peers: set[ID] = set()
        self._bootstrap_epoch = 0
        self._bootstrap_changed = trio.Event()
        self.bootstrapped = trio.Event()
        self._repeats = ev.RepeatLimiter()
        self._lost = trio.Event()  # set (and replaced) whenever a peer's last connection closes
        self.last_refresh: float | None = None
        self._components: list[Component] = []
        self._router: CircuitRouter | None = None
        self._request_observers: list[RequestObserver] = []
        self._lookup_observers: list[LookupObserver] = []
        self._conn_observers: list[ConnectionObserver] = []
        self._register_builtins()

    # ---------------------------------------------------------------- composition

    def add_component(self, component: Component) -> None:
        """Attach before listening, run in the node's nursery (in the order added)."""
        self._components.append(component)

    def set_router(self, router: CircuitRouter) -> None:
        self._router = router

    def observe_requests(self, observer: RequestObserver) -> None:
        self._request_observers.append(observer)

    def observe_lookups(self, observer: LookupObserver) -> None:
        self._lookup_observers.append(observer)

    def observe_connections(self, observer: ConnectionObserver) -> None:
        self._conn_observers.append(observer)

    def has_session(self, peer: ID) -> bool:
        """Is a command session with `peer` open (the connection is in use)?"""
        session = self._sessions.get(peer)
        return session is not None and not session.closed

    def _record(self, outcome: str, peer: ID, rtt_ms: float = 0.0) -> None:
        for observer in self._request_observers:
            if outcome == "success":
                observer.record_success(peer, rtt_ms)
            elif outcome == "timeout":
                observer.record_timeout(peer)
            else:
                observer.record_failure(peer)

    def refreshed(self) -> None:
        """A routing-table refresh finished (shown in the DHT snapshot)."""
        self.last_refresh = time.time()

    def _lookup_done(self, op: str, seconds: float, ok: bool) -> None:
        self.counters.lookups += 1
        self.counters.lookup_failures += 0 if ok else 1
        self.counters.lookup_ms += seconds * 1000
        for observer in self._lookup_observers:
            observer.dht_lookup(op, seconds, ok)

    # ---------------------------------------------------------------- lifecycle

    @property
    def host(self) -> IHost:
        if self._host is None:
            raise NodeError("node is not running")
        return self._host

    @property
    def dht(self) -> KadDHT:
        if self._dht is None:
            raise NodeError("node is not running")
        return self._dht

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def _identity(self) -> KeyPair:
        if self._key_pair is not None:
            return self._key_pair
        if self.config.ephemeral:
            return new_identity()
        return load_or_create_identity(self.config.identity_path())

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, bootstrap and run the components until cancelled."""
        cfg = self.config
        key_pair = self._identity()
        try:
            listen = multiaddr.Multiaddr(
                f"/{'ip6' if ':' in cfg.listen_addr else 'ip4'}/{cfg.listen_addr}"
                f"/tcp/{cfg.effective_port()}"
            )
        except Exception as exc:
            raise ListenError(f"bad listen address {cfg.listen_addr!r}: {exc}") from None
        check_port_free(cfg.listen_addr, cfg.effective_port())
        host = build_host(key_pair, cfg.dial_timeout, self.addresses)
        self.addresses.bind_transport(host.get_transport_addrs)
        install_limits(host, self.resources)
        mode = DHTMode.SERVER if cfg.is_dht_server() else DHTMode.CLIENT
        dht = KadDHT(host, mode)
        install_dht(host, dht, server=mode == DHTMode.SERVER, walk=dht_walk.provider_walk, rcmgr=self.resources)
        server = CommandServer(
            self.registry,
            ServeHooks(on_request=self._on_request, on_rejected=self._on_rejected),
            rcmgr=self.resources,
        )
        # admitted (limits, first-byte deadline) by install_limits' stream gate, as every protocol
        host.set_stream_handler(codec.PROTOCOL_ID, server.handle_stream)  # type: ignore[arg-type]
        host.get_network().register_notifee(_Notifee(self))
        self._host, self._dht = host, dht
        for component in self._components:
            component.attach(host, dht)
        try:
            async with host.run([listen]):
                if not host.get_transport_addrs():
                    raise ListenError(f"cannot listen on {cfg.listen_addr}:{cfg.effective_port()}")
                async with background_trio_service(dht), trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.started_at = time.time()
                    self.bus.publish(
                        ev.Listening(
                            peer_id=str(self.peer_id), addrs=self.listen_addrs(), role=cfg.role
                        )
                    )
                    for component in self._components:
                        await nursery.start(_run_component, component)
                    nursery.start_soon(self._bootstrap_all)
                    nursery.start_soon(trim_after_bursts, self.resources)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._nursery = None
            for session in list(self._sessions.values()):
                session.closed = True
            with trio.CancelScope(shield=True), trio.move_on_after(cfg.close_timeout):
                await host.close()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run a task in the node's nursery (it ends when the node stops)."""
        if self._nursery is not None:
            try:
                self._nursery.start_soon(fn, *args)
            except RuntimeError:  # nursery closing during shutdown
                pass

    # ---------------------------------------------------------------- events in

    def _on_connected(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        self.counters.connections_opened += 1
        direction = str(getattr(conn, "direction", "")).lower().split(".")[-1]
        addrs = conn.get_transport_addresses() if hasattr(conn, "get_transport_addresses") else []
        self.bus.publish(
            ev.PeerConnected(
                peer_id=str(peer),
                direction=direction or "unknown",
                addr=str(addrs[0]) if addrs else "",
                via=self._router.on_connected(conn) if self._router else "direct",
            )
        )
        self.spawn(self._add_if_dht_server, peer)
        for observer in self._conn_observers:
            observer.connection_opened(conn)

    def _on_disconnected(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        self.counters.connections_closed += 1
        self._count_traffic(conn)
        if self._router is not None:
            self._router.on_disconnected(conn)
        for observer in self._conn_observers:
            observer.connection_closed(conn)
        if not self.host.get_network().get_connections(peer):
            session = self._sessions.pop(peer, None)
            if session is not None:
                session.closed = True
            self.bus.publish(ev.PeerDisconnected(peer_id=str(peer)))
            self._lost.set()
            self._lost = trio.Event()

    async def _add_if_dht_server(self, peer: ID) -> None:
        """py-libp2p does not add connected DHT servers to the routing table itself."""
        store = self.host.get_peerstore()
        with trio.move_on_after(IDENTIFY_WAIT):
            while True:
                try:
                    protocols = store.get_protocols(peer)
                except Exception:
                    protocols = []
                if protocols:
                    break
                await trio.sleep(0.01)
        try:
            protocols = [str(p) for p in store.get_protocols(peer)]
        except Exception:
            protocols = []
        agent = self._agent_from_peerstore(peer)
        if agent:
            self._meta(peer).agent = agent
        if str(KAD_PROTOCOL) in protocols:
            try:
                await self.dht.add_peer(peer)
            except Exception:
                return
            size = self.dht.get_routing_table_size()
            if size != self._table_size_published:
                self._table_size_published = size
                self.bus.publish(ev.DHTUpdated(size=size))

    def _agent_from_peerstore(self, peer: ID) -> str:
        try:
            value = self.host.get_peerstore().get(peer, "AgentVersion")
        except Exception:
            return ""
        return str(value) if value else ""

    def _meta(self, peer: ID) -> _PeerMeta:
        return self._peer_meta.setdefault(peer, _PeerMeta())

    def _on_request(self, peer: str, req: codec.Request) -> None:
        self.counters.messages_in += 1
        self.bus.publish(
            ev.MessageReceived(
                peer_id=peer, id=req.id, command=req.command, args=req.args, sender=req.sender,
                size=req.size,
            )
        )

    def _on_rejected(self, peer: str, reason: str) -> None:
        self.counters.rejected += 1
        self.peer_failed(peer, f"rejected message from {peer}: {reason}", "cmd", key=f"rejected {peer}")

    def peer_failed(self, peer: str, message: str, where: str, *, key: str | None = None) -> None:
        """Publish a failure about `peer`: the first at once, the same again only now and
        then with its count (a peer that quit is not news every 5 s; see RepeatLimiter)."""
        count = self._repeats.hit(key or peer, time.monotonic())
        if count is not None:
            self.bus.publish(ev.ErrorEvent(message=message, where=where, peer_id=peer, repeats=count))

    def peer_ok(self, peer: str) -> None:
        """`peer` answered: its next failure is news again."""
        self._repeats.clear(peer)

    # ---------------------------------------------------------------- bootstrap

    async def _bootstrap_all(self) -> None:
        targets: list[DialTarget] = []
        for text in self.config.bootstrap:
            try:
                targets.append(parse_dial_target(text))
            except AddressError as exc:
                self.bus.publish(ev.ErrorEvent(message=str(exc), where="bootstrap"))
        if not targets:
            self.bootstrapped.set()
            return
        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(self._keep_bootstrap, target)

    async def _keep_bootstrap(self, target: DialTarget) -> None:
        """Stay connected to one bootstrap node: dial; when the connection is lost, redial
        at once and then every 0.5, 1, 2, 2, ... s (each failed try a `bootstrap_retry`),
        so a restarted bootstrap node is rejoined ~2 s after it is back.

        One exception, so as not to fight a busy bootstrap node's connection manager: when
        it keeps closing our link soon after we make it (the redial succeeds at once, so it
        is up and pruning, not crashed) while our routing table no longer needs it, the
        next redial waits 30 s, doubling up to 5 min."""
        retry = BOOTSTRAP_RETRY_FIRST
        pruned_wait = BOOTSTRAP_PRUNED_WAIT
        attempt = 0
        pruned = 0  # young links lost in a row that a redial remade at once
        peer: ID | None = None
        connected_at = 0.0
        young = False
        while True:
            if peer is not None and self.host.get_network().get_connections(peer):
                with trio.move_on_after(BOOTSTRAP_CHECK_INTERVAL):
                    await self._lost.wait()  # some peer's last connection closed: ours?
                continue
            if peer is not None and attempt == 0:  # just lost
                young = trio.current_time() - connected_at < BOOTSTRAP_STABLE
                if not young:
                    pruned, pruned_wait = 0, BOOTSTRAP_PRUNED_WAIT
                elif pruned and self.dht.get_routing_table_size() >= BOOTSTRAP_HEALTHY_TABLE:
                    await trio.sleep(pruned_wait)
                    pruned_wait = min(pruned_wait * 2, BOOTSTRAP_PRUNED_MAX_WAIT)
            try:
                peer = await self.dial(str(target))
            except NodeError as exc:
                if "is ourselves" in str(exc):
                    return
                attempt += 1
                # dial() says "dial ADDR: reason"; the event names the address already
                reason = str(exc).removeprefix(f"dial {target}: ")
                self.bus.publish(ev.BootstrapRetry(addr=str(target), error=reason, retry_in=retry,
                                                   attempt=attempt))
                await trio.sleep(retry)
                retry = min(retry * 2, BOOTSTRAP_RETRY_MAX)
                continue
            # remade at the first try after a young link was lost: it was closed, not down
            pruned = pruned + 1 if young and attempt == 0 else 0
            retry, attempt, connected_at = BOOTSTRAP_RETRY_FIRST, 0, trio.current_time()
            self.bootstrap_peers.add(peer)
            await self._add_if_dht_server(peer)
            # Usable now: the bootstrap node answers DHT queries. Filling the table with our
            # neighbours (a self-lookup, 0.3-0.5 s on loopback) goes on in the background
            # instead of delaying every dialer's first lookup by that much.
            self.addresses_changed()
            self.bootstrapped.set()
            self.bus.publish(
                ev.Bootstrapped(
                    peers=[str(p) for p in self.bootstrap_peers],
                    routing_table_size=self.dht.get_routing_table_size(),
                )
            )
            self.spawn(self._refresh_routing_table)

    async def _refresh_routing_table(self) -> None:
        """Look ourselves up so the table fills with our neighbours (bounded in time)."""
        with trio.move_on_after(self.config.dial_timeout):
            try:
                await self.dht.peer_routing.find_closest_peers_network(self.peer_id.to_bytes())
            except Exception:
                pass
        self.refreshed()

    @property
    def bootstrap_epoch(self) -> int:
        """Increases on every (re)connection to a bootstrap node: a cue to re-provide."""
        return self._bootstrap_epoch

    async def wait_bootstrap_change(self, timeout: float) -> bool:
        with trio.move_on_after(timeout):
            await self._bootstrap_changed.wait()
            return True
        return False

    # ---------------------------------------------------------------- commands

    async def dial(self, addr: str) -> ID:
        """Connect to `/ip4|dns4/.../tcp/N[/p2p/ID]`; learns the peer id when not given.
        A `.../p2p/RELAY/p2p-circuit/p2p/ID` address dials through that relay; a bare peer
        id (or `/p2p/ID`) is looked up first (routing table, peerstore, then the DHT)."""
        if "/p2p-circuit" in addr and self._router is not None:
            return await self._router.dial_circuit(addr.strip())
        bare = addr.strip().removeprefix("/p2p/")
        if is_peer_id(bare):
            return await self._dial_peer_id(ID.from_base58(bare))
        if "/" not in bare:
            raise NodeError(f"dial {bare!r}: not a peer id, nor a multiaddr "
                            "(/ip4/HOST/tcp/PORT or /ip4/HOST/tcp/PORT/p2p/ID)")
        try:
            target = parse_dial_target(addr)
        except AddressError as exc:
            raise NodeError(str(exc)) from None
        try:
            with trio.fail_after(self.config.dial_timeout):
                addrs = await trio.to_thread.run_sync(resolve_dns, target)
                peer = target.peer_id
                if peer is None:
                    peer = await learn_peer_id(self.host, addrs[0])
                if peer == self.peer_id:
                    raise NodeError(f"{addr} is ourselves")
                forget_dial_failure(self.host, peer)  # an explicit dial is not blocked for 60 s
                await self.host.connect(PeerInfo(peer, addrs))
        except trio.TooSlowError:
            self.counters.dial_errors += 1
            raise NodeError(f"dial {addr}: timed out after {self.config.dial_timeout:g}s") from None
        except NodeError:
            raise
        except AddressError as exc:
            raise NodeError(str(exc)) from None
        except Exception as exc:
            self.counters.dial_errors += 1
            raise NodeError(f"dial {addr}: {_reason(exc)}") from None
        return peer

    async def _dial_peer_id(self, peer: ID) -> ID:
        """Find a peer's addresses (routing table, peerstore, then a DHT lookup) and dial
        them; each step is published as a DialProgress event (the console shows them)."""
        if peer == self.peer_id:
            raise NodeError(f"{peer} is ourselves")
        pid = str(peer)

        def step(stage: str, tried: list[str], found_in: str = "", addrs: list[multiaddr.Multiaddr] | None = None,
                 error: str = "") -> None:
            self.bus.publish(ev.DialProgress(peer_id=pid, stage=stage, tried=list(tried), found_in=found_in,
                                             addrs=[str(a) for a in addrs or []], error=error))

        if self.host.get_network().get_connections(peer):
            step("connected", [])
            return peer
        tried = ["routing_table"]
        known = self.dht.routing_table.get_peer_info(peer)
        addrs = list(known.addrs) if known is not None else []
        if not addrs:
            tried.append("peerstore")
            addrs = self._peerstore_addrs(peer)
        if not addrs:
            tried.append("dht")
            step("lookup", tried)  # the slow part: say that it started
            try:
                with trio.move_on_after(self.config.dial_timeout):
                    found = await self.dht.find_peer(peer)
                    addrs = list(found.addrs) if found is not None else []
            except Exception as exc:
                error = f"find {peer}: {_reason(exc)}"
                step("failed", tried, error=error)
                raise NodeError(error) from None
        if not addrs:
            error = (f"dial {peer}: no address known for it (not in the routing table or the "
                     f"peerstore, and the DHT did not name one)")
            step("failed", tried, error=error)
            raise NodeError(error)
        step("lookup", tried, tried[-1], addrs)
        step("dialing", tried, tried[-1], addrs)
        forget_dial_failure(self.host, peer)  # an explicit dial is not blocked for 60 s
        try:
            await self.connect_peer(PeerInfo(peer, addrs))
        except NodeError as exc:
            step("failed", tried, tried[-1], addrs, error=str(exc))
            raise
        step("connected", tried, tried[-1], addrs)
        return peer

    def _peerstore_addrs(self, peer: ID) -> list[multiaddr.Multiaddr]:
        try:  # py-libp2p raises for an unknown or expired peer
            return list(self.host.get_peerstore().addrs(peer))
        except Exception:
            return []

    def _advertised_changed(self, addrs: list[str]) -> None:
        """Observed or port-mapped addresses came or went: say so, and re-provide."""
        me = f"/p2p/{self.peer_id}" if self._host is not None else ""
        self.bus.publish(ev.AddrsChanged(addrs=[a + me for a in addrs]))
        self.addresses_changed()
        if self._host is not None:
            self.spawn(push_identify, self._host)

    def addresses_changed(self) -> None:
        """Bump the re-provide cue: a bootstrap (re)connection, or our advertised addresses
        changed (a relay reservation came or went)."""
        self._bootstrap_epoch += 1
        self._bootstrap_changed.set()
        self._bootstrap_changed = trio.Event()

    def drop_session(self, peer: ID) -> None:
        """Forget the command session so the next request opens a stream on the best
        connection (after a hole punch: the direct one)."""
        session = self._sessions.pop(peer, None)
        if session is not None:
            session.closed = True

    async def connect_peer(self, info: PeerInfo) -> None:
        """Connect to a peer found in the DHT (addresses from its provider record); peers
        with `/p2p-circuit` addresses are dialed directly and, half a second later, through
        their relays (RelayManager.connect)."""
        if self._router is not None and self._router.wants_relay(info):
            await self._router.connect(info)
            return
        direct = direct_tcp_addrs(info.addrs)
        try:
            with trio.fail_after(self.config.dial_timeout):
                if len(direct) > 1 and not self.host.get_network().get_connections(info.peer_id):
                    # every advertised address in its order (public first), not only the oldest
                    self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 120)
                    forget_dial_failure(self.host, info.peer_id)
                    await dial_in_order(self.host, info.peer_id, direct)
                else:
                    await self.host.connect(info)
        except trio.TooSlowError:
            self.counters.dial_errors += 1
            raise NodeError(f"dial {info.peer_id}: timed out") from None
        except Exception as exc:
            self.counters.dial_errors += 1
            raise NodeError(f"dial {info.peer_id}: {_reason(exc)}") from None

    async def provide_namespace(self, namespace: str) -> bool:
        started = time.perf_counter()
        with trio.move_on_after(self.config.dial_timeout * 2):
            ok = await self.dht.provide(dht_key(namespace_multihash(namespace)))
            self._lookup_done("provide", time.perf_counter() - started, bool(ok))
            if ok:
                self.bus.publish(ev.Registered(namespace=namespace, key=namespace_cid(namespace)))
            return bool(ok)
        return False

    async def find_providers(self, key: str, timeout: float | None = None,
                             on_provider: Callable[[PeerInfo], None] | None = None) -> list[PeerInfo]:
        """Providers of a DHT key (`dht_key` form), from one walk bounded by `timeout`.

        Returns what the walk found by then, not nothing, and hands each provider to
        `on_provider` as soon as an answer names it: one silent peer among the closest
        holds a walk for its whole query deadline (see dht/walk.py provider_walk)."""
        limit = timeout or self.config.dial_timeout
        started = time.perf_counter()
        found = await dht_walk.find_providers(self.dht, bytes.fromhex(key), PROVIDERS_WANTED,
                                                 timeout=limit, on_provider=on_provider)
        elapsed = time.perf_counter() - started
        self._lookup_done("find_providers", elapsed, elapsed < limit)
        return dedupe_providers(found)

    async def find_peers(self, namespace: str, timeout: float | None = None,
                         on_peer: Callable[[PeerInfo], None] | None = None) -> list[PeerInfo]:
        """Providers of the namespace key, de-duplicated, without ourselves; each also goes
        to `on_peer` as soon as the walk finds it (connect then, not when the walk ends)."""
        me = self.peer_id

        def named(info: PeerInfo) -> None:
            if info.peer_id == me:
                return
            if (namespace, info.peer_id) not in self._discovered:  # lookups repeat: report once
                self._discovered.add((namespace, info.peer_id))
                self.bus.publish(ev.Discovered(peer_id=str(info.peer_id), addrs=[str(a) for a in info.addrs],
                                               namespace=namespace))
            if on_peer is not None:
                on_peer(info)

        found = await self.find_providers(dht_key(namespace_multihash(namespace)), timeout, named)
        return [p for p in found if p.peer_id != me]

    async def _session(self, peer: ID) -> CommandSession:
        session = self._sessions.get(peer)
        if session is not None and not session.closed:
            return session
        lock = self._session_locks.setdefault(peer, trio.Lock())
        async with lock:
            session = self._sessions.get(peer)
            if session is not None and not session.closed:
                return session
            if self._nursery is None:
                raise NodeError("node is not running")
            try:
                with trio.fail_after(self.config.dial_timeout):
                    stream = await self.host.new_stream(peer, [codec.PROTOCOL_ID])  # type: ignore[list-item]
            except trio.TooSlowError:
                raise NodeError(f"open stream to {peer}: timed out") from None
            except Exception as exc:
                raise NodeError(f"open stream to {peer}: {_reason(exc)}") from None
            session = CommandSession(stream, sender=str(self.peer_id))
            self._sessions[peer] = session
            self._nursery.start_soon(session.run_reader)
            return session

    async def request(
        self, peer: ID | str, command: str, args: dict[str, Any] | None = None,
        timeout: float | None = None, *, quiet: bool = False,
    ) -> codec.Response:
        """Send one command and return the peer's response (ok or error). `quiet`: no
        message_sent/reply events (periodic housekeeping such as capability pushes)."""
        peer_id = ID.from_base58(peer) if isinstance(peer, str) else peer
        timeout = self.config.request_timeout if timeout is None else timeout
        args = args or {}
        for attempt in (1, 2):  # a stale session (peer restarted) gets one fresh retry
            session = await self._session(peer_id)
            req_id = session.next_id()
            self.counters.messages_out += 1
            if not quiet:
                self.bus.publish(ev.MessageSent(peer_id=str(peer_id), id=req_id, command=command,
                                                args=args, size=_json_size(args)))
            try:
                resp, rtt = await session.request(command, args, timeout, req_id=req_id)
            except SessionClosed as exc:
                self._sessions.pop(peer_id, None)
                if attempt == 2:
                    self.counters.errors += 1
                    self._record("failure", peer_id)
                    raise NodeError(f"{command} to {peer_id}: {exc}") from None
                continue
            except trio.TooSlowError:
                self.counters.errors += 1
                self._record("timeout", peer_id)
                raise NodeError(f"{command} to {peer_id}: no reply within {timeout:g}s") from None
            except Exception as exc:
                self._sessions.pop(peer_id, None)
                self.counters.errors += 1
                self._record("failure", peer_id)
                raise NodeError(f"{command} to {peer_id}: {_reason(exc)}") from None
            self.counters.replies += 1
            self._record("success", peer_id, rtt * 1000)
            if not quiet:
                self.bus.publish(ev.Reply(
                    peer_id=str(peer_id), id=resp.id, ok=resp.ok, result=resp.result,
                    error=None if resp.ok else {"code": resp.error_code,
                                                "message": resp.error_message},
                    rtt_ms=round(rtt * 1000, 3),
                ))
            return resp
        raise AssertionError("unreachable")

    async def send_command(
        self, peer: ID | str, command: str, args: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Like `request`, but returns the result and raises CommandFailed on an error reply."""
        resp = await self.request(peer, command, args, timeout)
        if not resp.ok:
            raise CommandFailed(resp.error_code, resp.error_message)
        return resp.result

    async def ping(self, peer: ID | str, timeout: float = 5.0) -> float:
        """libp2p ping (`/ipfs/ping/1.0.0`), timed here to sub-millisecond precision."""
        peer_id = ID.from_base58(peer) if isinstance(peer, str) else peer
        payload = os.urandom(32)
        try:
            with trio.fail_after(timeout):
                stream = await self.host.new_stream(peer_id, [PING_PROTOCOL])
                try:
                    start = time.perf_counter()
                    await stream.write(payload)
                    got = b""
                    while len(got) < 32:
                        chunk = await stream.read(32 - len(got))
                        if not chunk:
                            break
                        got += chunk
                    rtt = time.perf_counter() - start
                finally:
                    await stream.close()
        except trio.TooSlowError:
            raise NodeError(f"ping {peer_id}: timed out") from None
        except Exception as exc:
            raise NodeError(f"ping {peer_id}: {_reason(exc)}") from None
        if got != payload:
            raise NodeError(f"ping {peer_id}: wrong echo")
        self._meta(peer_id).rtt_ms = rtt * 1000
        return rtt

    async def disconnect(self, peer: ID | str) -> None:
        peer_id = ID.from_base58(peer) if isinstance(peer, str) else peer
        await self.host.disconnect(peer_id)

    # ---------------------------------------------------------------- snapshots

    def listen_addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    def connected_peers(self) -> list[ID]:
        return list(self.host.get_network().get_connections_map())

    def connections(self) -> list[ConnectionInfo]:
        out: list[ConnectionInfo] = []
        for peer, conns in self.host.get_network().get_connections_map().items():
            meta = self._peer_meta.get(peer, _PeerMeta())
            for conn in conns:
                swarm_conn: Any = conn  # SwarmConn: more than the INetConn interface says
                addrs = conn.get_transport_addresses()
                remote = str(addrs[0]) if addrs else ""
                streams = []
                for s in conn.get_streams():
                    proto = s.get_protocol()
                    streams.append(StreamInfo(str(proto) if proto else "?",
                                              _direction(getattr(s, "direction", ""))))
                out.append(
                    ConnectionInfo(
                        peer_id=str(peer),
                        direction=_direction(swarm_conn.direction),
                        remote_addr=remote,
                        transport="relayed" if "p2p-circuit" in remote else "direct",
                        security=str(swarm_conn.get_negotiated_security_protocol() or ""),
                        muxer=str(swarm_conn.get_negotiated_muxer_protocol() or ""),
                        streams=streams,
                        rtt_ms=meta.rtt_ms,
                        since=getattr(conn, "_created_at", self.started_at),
                        agent=meta.agent or self._agent_from_peerstore(peer),
                        via=self._router.via_of(conn) if self._router else "direct",
                    )
                )
        return out

    def routing_table(self) -> RoutingTableInfo:
        dht = self.dht
        me = self.peer_id
        connected = set(self.host.get_network().get_connections_map())
        by_cpl: dict[int, list[RoutingPeer]] = {}
        store = self.host.get_peerstore()
        for bucket in dht.routing_table.buckets:
            for peer, (info, last_seen) in list(bucket.peers.items()):
                cpl = common_prefix_length(me, peer)
                meta = self._peer_meta.get(peer, _PeerMeta())
                try:
                    addrs = [str(a) for a in store.addrs(peer)]
                except Exception:
                    addrs = [str(a) for a in info.addrs]
                by_cpl.setdefault(cpl, []).append(
                    RoutingPeer(str(peer), cpl, last_seen, peer in connected,
                                meta.agent or self._agent_from_peerstore(peer), addrs)
                )
        buckets = [RoutingBucket(cpl, sorted(peers, key=lambda p: p.peer_id))
                   for cpl, peers in sorted(by_cpl.items())]
        return RoutingTableInfo(
            size=dht.get_routing_table_size(), buckets=buckets,
            mode="server" if dht.mode == DHTMode.SERVER else "client",
            last_refresh=self.last_refresh,
        )

    def _count_traffic(self, conn: Any) -> None:
        """Add what `conn` moved since we last looked to counters.bytes_in/out."""
        now = connection_bytes(conn)
        before = self._traffic_seen.get(conn, (0, 0))
        self.counters.bytes_in += max(0, now[0] - before[0])
        self.counters.bytes_out += max(0, now[1] - before[1])
        self._traffic_seen[conn] = now

    def update_traffic(self) -> None:
        """Bring counters.bytes_in/out up to date (wire bytes after each Noise handshake,
        all connections, closed ones included). Cheap: a few attribute reads per connection."""
        if self._host is None:
            return
        try:
            conns = [c for cs in self._host.get_network().get_connections_map().values() for c in cs]
        except Exception:
            return
        for conn in conns:
            self._count_traffic(conn)

    def stats(self) -> Stats:
        self.update_traffic()
        return Stats(
            role=self.config.role,
            peer_id=str(self.peer_id),
            uptime_s=round(time.time() - self.started_at, 1),
            connections=len(self.connected_peers()),
            routing_table_size=self.dht.get_routing_table_size(),
            events_dropped=self.bus.dropped,
            **vars(self.counters),
        )

    # ---------------------------------------------------------------- built-in commands

    def _register_builtins(self) -> None:
        reg = self.registry

        async def ping(call: Call) -> dict[str, Any]:
            return {"pong": True, "ts": time.time()}

        async def echo(call: Call) -> Any:
            return call.request.args

        async def message(call: Call) -> dict[str, Any]:
            text = call.request.args.get("text", call.request.args.get("message", ""))
            return {"received": True, "echo": text, "by": str(self.peer_id)}

        for name, handler in (("ping", ping), ("echo", echo), ("message", message)):
            if reg.get(name) is None:
                reg.register(name, handler)


async def _run_component(component: Component, *, task_status: TaskStatus[None]) -> None:
    await component.run(task_status=task_status)


def _direction(value: Any) -> str:
    text = str(value).lower().split(".")[-1]
    return text if text in ("inbound", "outbound") else "unknown"


def _json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (0 if it is not JSON: the send will say so)."""
    try:
        return codec.json_size(value)  # one shared encoder: this runs per request
    except (TypeError, ValueError):
        return 0


def _reason(exc: BaseException) -> str:
    """One short line from an exception chain that py-libp2p often nests or leaves empty."""
    return failure_reason(exc)


__all__ = [
    "CircuitRouter",
    "CommandFailed",
    "Component",
    "ConnectionInfo",
    "Counters",
    "Node",
    "NodeError",
    "RoutingTableInfo",
    "common_prefix_length",
]
