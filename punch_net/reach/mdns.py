"""mDNS: peers on one LAN find each other with no bootstrap node (kubo's default).

py-libp2p's `libp2p.discovery.mdns` (zeroconf) announces and browses `_p2p._udp.local`;
zeroconf runs its own thread, so its callbacks come back into trio through a channel.
Each peer found is published (`mdns_peer`) and dialed; the connection puts a DHT server
into the routing table (Node._add_if_dht_server), which is how namespace lookups then
find it. We announce our listen (LAN) addresses with 0.0.0.0 expanded, not what we
advertise to the internet: py-libp2p's broadcaster would put 0.0.0.0 in the TXT record.
zeroconf is imported only here, when mDNS is on (punch testnet stubs it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.api import NodeError
from punch_net.p2p import import_guard
from punch_net.p2p.addresses import expand_unspecified

if TYPE_CHECKING:
    from punch_net.node import Node

log = logging.getLogger(__name__)
STOP_TIMEOUT = 3.0


class MdnsService:
    """A node Component: announce ourselves on the LAN and dial the peers found there."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._host: IHost | None = None
        self.found: dict[str, float] = {}  # peer id -> when first found (time.time())

    def attach(self, host: IHost, dht: object) -> None:
        self._host = host

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._host is not None
        host = self._host
        me = host.get_id()
        token = trio.lowlevel.current_trio_token()
        send, recv = trio.open_memory_channel[PeerInfo](64)

        def on_peer(info: PeerInfo) -> None:  # zeroconf's thread
            if info.peer_id == me:
                return
            try:
                trio.from_thread.run_sync(send.send_nowait, info, trio_token=token)
            except (trio.WouldBlock, trio.RunFinishedError, trio.Cancelled):
                pass

        from libp2p.discovery.events.peerDiscovery import peerDiscovery

        peerDiscovery.register_peer_discovered_handler(on_peer)
        discovery: Any = None
        try:
            try:
                discovery = await trio.to_thread.run_sync(self._start, host)
            except Exception as exc:  # no multicast-capable interface, port 5353 refused...
                self.node.bus.publish(ev.ErrorEvent(message=f"mDNS is off: {exc}", where="mdns"))
                task_status.started()
                await trio.sleep_forever()
            task_status.started()
            async with trio.open_nursery() as nursery:
                # announcing probes the name first (~1.5 s): browse meanwhile
                nursery.start_soon(self._announce, discovery)
                async for info in recv:
                    peer = str(info.peer_id)
                    if peer in self.found:
                        continue
                    self.found[peer] = trio.current_time()
                    addrs = [f"{a}/p2p/{peer}" for a in info.addrs]
                    self.node.bus.publish(ev.MdnsPeer(peer_id=peer, addrs=addrs))
                    nursery.start_soon(self._connect, info)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(on_peer)
            if discovery is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
                    await trio.to_thread.run_sync(_stop, discovery, abandon_on_cancel=True)  # type: ignore[call-arg]

    def _start(self, host: IHost) -> Any:
        """Blocking (zeroconf binds its sockets and probes the name): run in a thread."""
        import_guard.release("zeroconf", "libp2p.discovery.mdns")  # the `punch` executable stubs them
        from libp2p.discovery.mdns.mdns import MDNSDiscovery

        lan = [str(a) for a in expand_unspecified(list(host.get_transport_addrs()))]
        port = int(host.get_transport_addrs()[0].value_for_protocol("tcp"))
        return MDNSDiscovery(host.get_network(), port=port, listen_addrs=lan)  # browsing starts

    async def _announce(self, discovery: Any) -> None:
        await trio.to_thread.run_sync(discovery.broadcaster.register, abandon_on_cancel=True)  # type: ignore[call-arg]

    async def _connect(self, info: PeerInfo) -> None:
        if self.node.host.get_network().get_connections(info.peer_id):
            return
        try:
            await self.node.connect_peer(info)
        except NodeError as exc:
            self.node.bus.publish(ev.ErrorEvent(message=str(exc), where="mdns"))


def _stop(discovery: Any) -> None:
    try:
        discovery.broadcaster.unregister()
        discovery.listener.stop()
        discovery.zeroconf.close()
    except Exception as exc:
        log.debug("mDNS stop: %s", exc)
