"""The composition root: which components each role runs, wired in one place, and
`LocalNode`, the in-process implementation of the NodeAPI (punch_net/api.py).

    rt = Runtime(config)            # kernel + the role's components, nothing running yet
    rt.add_service(...)             # fronts add ops services (control socket, metrics, web)
    code = await rt.run()           # listens, runs the role's main, returns its exit code
    rt.api                          # the NodeAPI every front uses

Components never reach each other through the node: what one needs is passed in here.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, cast

import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.kad_dht.kad_dht import KadDHT
from trio_typing import TaskStatus

from punch_net import __version__
from punch_net import events as ev
from punch_net.api import (
    SNAPSHOT_PARTS,
    Candidate,
    DHTProvideResult,
    Health,
    JSONObject,
    NodeError,
    NodeInfo,
    NotRunning,
    PeerAddrs,
    ProviderLookup,
    RefreshResult,
    Reply,
    RouteResult,
    Snapshot,
)
from punch_net.config import NodeConfig, prepare_data_dir
from punch_net.dht import diagnostics
from punch_net.dht.refresh import Refresher
from punch_net.errors import BadArgs, NotFound
from punch_net.messaging.commands import CommandRegistry
from punch_net.node import Component, Node
from punch_net.p2p import import_guard
from punch_net.p2p.logs import tame_libp2p_logging
from punch_net.reach.service import ObservedAddrsService
from punch_net.relay.manager import RelayManager
from punch_net.relay.status import RelayStatus
from punch_net.roles import dialer, listener, monitor, torrent_client
from punch_net.routing.capabilities import CapabilityBook, local_capabilities, serve_capabilities
from punch_net.routing.connmgr import ConnManager
from punch_net.routing.reputation import open_store
from punch_net.routing.selection import Selector
from punch_net.routing.upkeep import RoutingUpkeep
from punch_net.torrent.info import CatalogueEntry, TransferInfo
from punch_net.torrent.manager import TorrentManager
from punch_net.torrent.metainfo import parse_info_hash

if TYPE_CHECKING:
    # Role- and option-specific components are imported where they are composed, so a
    # role loads only its own (the monitor's crawler, mDNS, UPnP: not a torrent client's).
    from punch_net.dht.crawler import Crawler, NetworkMap
    from punch_net.ops.metrics import NodeMetrics
    from punch_net.reach.mdns import MdnsService
    from punch_net.reach.portmap import PortMapService

Service = Callable[..., Awaitable[object]]  # async fn(*, task_status) started in the node's nursery


class ServiceComponent:
    """A front's service (control socket, metrics endpoint, web console) as a component."""

    def __init__(self, fn: Service) -> None:
        self.fn = fn

    def attach(self, host: IHost, dht: KadDHT) -> None:
        pass

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.fn(task_status=task_status)


MDNS_ROLES = ("listener", "dialer")  # on by default for these, as kubo's LAN discovery


def _loopback_only(listen_addr: str) -> bool:
    """Listening on loopback (tests, punch testnet): LAN discovery and port mapping are moot."""
    return listen_addr.startswith("127.") or listen_addr == "::1"


def _node_metrics(rt: Runtime) -> NodeMetrics:
    """The node's Prometheus metrics, fed by the kernel's observers and the reputation store."""
    import_guard.release("prometheus_client")  # the `punch` executable stubs it (import_guard.STUBBED)
    from punch_net.ops.metrics import NodeMetrics
    from punch_net.rcmgr.metrics import RcmgrCollector

    metrics = NodeMetrics(rt.config.role, rt.api)
    rt.reputation.on_record = metrics.reputation_event
    metrics.registry.register(RcmgrCollector(rt.node.resources))  # libp2p_rcmgr_* series
    rt.node.observe_lookups(metrics)
    rt.node.observe_connections(metrics)
    return metrics


class Runtime:
    """One node for one role: the kernel and its components, composed."""

    def __init__(self, config: NodeConfig, *, key_pair: KeyPair | None = None,
                 registry: CommandRegistry | None = None) -> None:
        self.config = cfg = config
        prepare_data_dir(cfg)  # an unwritable data dir is one line (ConfigError), not a traceback
        tame_libp2p_logging()  # apps embedding a node (P2PClient) get it too, not only the CLI
        self.node = node = Node(cfg, registry=registry, key_pair=key_pair)
        try:
            self.connmgr = ConnManager(node, cfg.conn_low, cfg.conn_high)
        except ValueError as exc:
            raise NodeError(str(exc)) from None
        self.reputation = open_store(None if cfg.ephemeral else cfg.data_dir, cfg.reputation_half_life)
        self.book = CapabilityBook()
        serve_capabilities(node, self.book)
        self.relay = RelayManager(node, self.connmgr)
        self.selector = Selector(node, self.reputation, self.book)
        self.torrent: TorrentManager | None = None
        self.network_map: NetworkMap | None = None
        self.crawler: Crawler | None = None
        if cfg.role == "torrent-server":
            self.torrent = TorrentManager(node, share_dir=cfg.share_dir, seed=True, reputation=self.reputation)
        elif cfg.role == "torrent-client":
            self.torrent = TorrentManager(node, download_dir=cfg.download_dir, seed=not cfg.no_seed,
                                          timeout=cfg.timeout, reputation=self.reputation)
        elif cfg.role == "monitor":
            from punch_net.dht.crawler import Crawler, NetworkMap

            self.network_map = NetworkMap()
            self.crawler = Crawler(node, self.network_map, self.reputation, self.book,
                                   interval=cfg.crawl_interval)
        self.api = LocalNode(self)
        # Prometheus metrics only for a node that serves them (--metrics-port): elsewhere no one
        # reads them, and they cost ~10 ms of imports and an event task woken by every event.
        self.metrics: NodeMetrics | None = None
        node.set_router(self.relay)
        node.observe_requests(self.reputation)
        node.observe_connections(self.connmgr)
        components: list[Component] = [
            self.relay,
            self.connmgr,
            Refresher(node, cfg.dht_refresh_interval),
            RoutingUpkeep(node, self.reputation, self.book, cfg.capabilities_interval),
            ObservedAddrsService(node, lambda: str(self.relay.reachability), lambda: self.relay.dialed_back),
        ]
        self.mdns: MdnsService | None = None
        if cfg.mdns and cfg.role in MDNS_ROLES and not _loopback_only(cfg.listen_addr):
            from punch_net.reach.mdns import MdnsService

            self.mdns = MdnsService(node)
            components.append(self.mdns)
        self.portmap: PortMapService | None = None
        if cfg.port_mapping and not _loopback_only(cfg.listen_addr):
            from punch_net.reach.portmap import PortMapService

            self.portmap = PortMapService(node)
            components.append(self.portmap)
        if cfg.metrics_port is not None:
            self.metrics = _node_metrics(self)
            components.insert(0, self.metrics)
        for component in components:
            node.add_component(component)

    def add_service(self, fn: Service) -> None:
        """A front's long-running service, started (in order) once the node listens."""
        self.node.add_component(ServiceComponent(fn))

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> int:
        """Run the node and its role until the role ends (its exit code) or we are cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.node.run)
            task_status.started()
            code = await self._main()
            nursery.cancel_scope.cancel()
        return code

    async def _main(self) -> int:
        """The role table: what each role does once its node is up."""
        node, cfg = self.node, self.config
        if cfg.role == "listener":
            return await listener.run_listener(node)
        if cfg.role == "dialer":
            return await dialer.run_dialer(node, self.selector)
        if cfg.role == "monitor":
            assert self.network_map is not None and self.crawler is not None
            self.network_map.self_id = str(node.peer_id)
            return await monitor.run_monitor(node, self.network_map, self.crawler)
        if self.torrent is not None and cfg.role == "torrent-client":
            return await torrent_client.run_torrent_client(node, self.torrent)
        if self.torrent is not None:
            await self.torrent.run()
            return 0
        await trio.sleep_forever()  # server: the kernel and its components are the role
        return 0


class LocalNode:
    """The NodeAPI in-process: what the CLI, the console and the control socket call."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._node = rt.node

    def _torrent(self) -> TorrentManager:
        if self._rt.torrent is None:
            raise NotRunning("this node runs no torrent manager (start a torrent role)")
        return self._rt.torrent

    async def info(self) -> NodeInfo:
        node = self._node
        components = ["relay", "routing", *(["metrics"] if self._rt.metrics is not None else [])]
        if self._rt.torrent is not None:
            components.append("torrent")
        if self._rt.network_map is not None:
            components.append("monitor")
        return NodeInfo(peer_id=str(node.peer_id) if node.running else "", role=self._rt.config.role,
                        listen_addrs=node.listen_addrs() if node.running else [], pid=os.getpid(),
                        version=__version__, components=components)

    async def snapshot(self, parts: list[str] | None = None) -> Snapshot:
        return self.take_snapshot(parts)

    def take_snapshot(self, parts: list[str] | None = None) -> Snapshot:
        """Everything a console shows; cheap and synchronous (no network)."""
        want = set(parts or SNAPSHOT_PARTS)
        node, rt = self._node, self._rt
        errors: list[str] = []
        got: dict[str, object] = {}

        def grab(name: str, fn: Callable[[], object]) -> None:
            if name not in want:
                return
            try:
                got[name] = fn()
            except Exception as exc:  # one part's failure must not spoil the snapshot
                errors.append(f"{name}: {exc}")

        if not node.running:
            return Snapshot(ts=time.time(), errors=["node is not running"])
        grab("stats", node.stats)
        grab("listen_addrs", node.listen_addrs)
        grab("connections", node.connections)
        grab("routing", node.routing_table)
        grab("relay", rt.relay.status)
        if rt.torrent is not None:
            grab("transfers", rt.torrent.snapshot)
        grab("reputation", rt.reputation.snapshot)
        grab("capabilities", lambda: local_capabilities(rt.config.data_dir))
        if rt.network_map is not None:
            grab("network", rt.network_map.snapshot)
        return Snapshot(ts=time.time(), errors=errors, **got)  # type: ignore[arg-type]

    def events(self, replay: bool = True) -> AbstractAsyncContextManager[AsyncIterator[ev.Event]]:
        return self._events(replay)

    @asynccontextmanager
    async def _events(self, replay: bool) -> AsyncIterator[AsyncIterator[ev.Event]]:
        with self._node.bus.subscribe(10_000, replay=replay) as sub:
            yield sub

    async def dial(self, addr: str) -> str:
        return str(await self._node.dial(addr))

    async def disconnect(self, peer: str) -> None:
        await self._node.disconnect(peer)

    async def find_peers(self, namespace: str, timeout: float | None = None) -> list[PeerAddrs]:
        found = await self._node.find_peers(namespace, timeout)
        return [PeerAddrs(str(p.peer_id), [str(a) for a in p.addrs]) for p in found]

    async def provide(self, namespace: str) -> bool:
        return await self._node.provide_namespace(namespace)

    async def request(self, peer: str, command: str, args: JSONObject | None = None,
                      timeout: float | None = None) -> Reply:
        started = time.perf_counter()
        resp = await self._node.request(peer, command, dict(args or {}), timeout)
        return Reply(id=resp.id, ok=resp.ok, result=resp.result, error_code=resp.error_code,
                     error_message=resp.error_message, rtt_ms=round((time.perf_counter() - started) * 1000, 3))

    async def send_best(self, namespace: str, command: str, args: JSONObject | None = None,
                        timeout: float | None = None) -> RouteResult:
        return await self._rt.selector.send_to_best(namespace, command, dict(args or {}), timeout=timeout)

    async def rank(self, namespace: str) -> list[Candidate]:
        return await self._rt.selector.candidates(namespace)

    async def ping(self, peer: str, timeout: float = 5.0) -> float:
        return await self._node.ping(peer, timeout)

    async def reputation(self, peer: str | None = None) -> list[JSONObject]:
        store = self._rt.reputation
        if peer is not None:
            return [cast(JSONObject, store.details(peer))]
        return [cast(JSONObject, row) for row in store.snapshot()]

    async def relay_status(self) -> RelayStatus:
        return self._rt.relay.status()

    async def relay_reserve(self, relay: str) -> RelayStatus:
        self._rt.relay.reserve(relay)
        return self._rt.relay.status()

    async def relay_release(self, relay: str) -> RelayStatus:
        self._rt.relay.release(relay)
        return self._rt.relay.status()

    async def transfers(self) -> list[TransferInfo]:
        return self._torrent().snapshot() if self._rt.torrent is not None else []

    async def torrent_add(self, info_hash: str) -> TransferInfo:
        mgr = self._torrent()
        digest = _info_hash(info_hash)
        try:
            transfer = mgr.add(digest)
        except (ValueError, RuntimeError) as exc:
            raise NodeError(str(exc)) from None
        return transfer.snapshot()

    def _on_transfer(self, info_hash: str, action: Callable[[bytes], object]) -> object:
        digest = _info_hash(info_hash)
        try:
            return action(digest)
        except KeyError as exc:
            raise NotFound(str(exc.args[0]) if exc.args else f"no transfer {info_hash}") from None

    async def torrent_pause(self, info_hash: str) -> None:
        self._on_transfer(info_hash, self._torrent().pause)

    async def torrent_resume(self, info_hash: str) -> None:
        self._on_transfer(info_hash, self._torrent().resume)

    async def torrent_cancel(self, info_hash: str) -> None:
        self._on_transfer(info_hash, self._torrent().cancel)

    async def torrent_verify(self, info_hash: str) -> list[int]:
        mgr = self._torrent()
        digest = _info_hash(info_hash)
        try:
            return await mgr.verify(digest)
        except KeyError as exc:
            raise NotFound(str(exc.args[0]) if exc.args else f"no transfer {info_hash}") from None

    async def torrent_catalogue(self, timeout: float | None = None) -> list[CatalogueEntry]:
        return await self._torrent().catalogue(timeout)

    def _running(self) -> Node:
        if not self._node.running:
            raise NotRunning("the node is not running")
        return self._node

    async def dht_provide(self, key: str) -> DHTProvideResult:
        return await diagnostics.provide(self._running(), key)

    async def dht_find_providers(self, key: str, count: int = 20, timeout: float = 10.0,
                                 trace: bool = False) -> ProviderLookup:
        return await diagnostics.find_providers(self._running(), key, count, timeout, trace)

    async def dht_refresh(self) -> RefreshResult:
        return await diagnostics.refresh(self._running())

    async def health(self) -> Health:
        return diagnostics.health(self._running(), self._rt.connmgr)


def _info_hash(text: str) -> bytes:
    try:
        return parse_info_hash(text)
    except ValueError as exc:
        raise BadArgs(str(exc)) from None


__all__ = ["LocalNode", "Runtime", "ServiceComponent"]
