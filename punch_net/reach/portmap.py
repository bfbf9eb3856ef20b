"""UPnP IGD port mapping: ask the router to forward our listen port, keep the lease
renewed, remove it on exit, and advertise the mapped address while it lasts.

miniupnpc (the library py-libp2p's `libp2p.discovery.upnp` wraps) does the SSDP search
and the SOAP calls; it blocks, so every call runs in a thread. py-libp2p's own manager
is not used: it asks for a permanent mapping (lease 0) that outlives a crashed node, and
never renews or re-checks it. With no gateway (or one whose external address is private:
double NAT) nothing is mapped and the node falls back to relays and hole punching, as
before. NAT-PMP is not implemented. miniupnpc is imported only when mapping is on
(punch testnet stubs it).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.abc import IHost
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.p2p.addresses import is_public_ip

if TYPE_CHECKING:
    from punch_net.node import Node

log = logging.getLogger(__name__)
LEASE = 3600  # seconds asked for; renewed at half, so a crashed node's mapping dies within the hour
FIRST_SEARCH_MS = 1000  # SSDP answer wait on start (a LAN gateway answers in milliseconds)
LATER_SEARCH_MS = 2500
RETRY_NO_GATEWAY = 300.0
PERMANENT_RECHECK = 300.0
DESCRIPTION = "punch"


@dataclass(frozen=True)
class Mapping:
    gateway: str  # the IGD's control URL host, for humans
    external_ip: str
    external_port: int
    internal_ip: str
    internal_port: int
    lease: int  # granted as asked; 0 = permanent (IGDv1 routers that refuse leases)
    since: float

    @property
    def external(self) -> str:
        return f"/ip4/{self.external_ip}/tcp/{self.external_port}"

    @property
    def internal(self) -> str:
        return f"/ip4/{self.internal_ip}/tcp/{self.internal_port}"


def renew_after(lease: int) -> float:
    """Renew at half the lease (a permanent mapping: check it is still there now and then)."""
    return lease / 2 if lease > 0 else PERMANENT_RECHECK


class Gateway:
    """Blocking miniupnpc calls (run each in a thread)."""

    def __init__(self) -> None:
        import miniupnpc

        self.upnp: Any = miniupnpc.UPnP()

    def find(self, delay_ms: int) -> bool:
        self.upnp.discoverdelay = delay_ms
        try:
            if self.upnp.discover() <= 0:
                return False
            self.upnp.selectigd()
        except Exception as exc:  # "No UPnP device discovered", "Success" (see py-libp2p's note)
            log.debug("UPnP discovery: %s", exc)
            return False
        return True

    def map(self, internal_port: int) -> Mapping | None:
        upnp = self.upnp
        try:
            external_ip = str(upnp.externalipaddress())
        except Exception as exc:
            log.debug("UPnP external address: %s", exc)
            return None
        if not external_ip or not _public(external_ip):
            log.debug("UPnP gateway's external address %r is not public (double NAT?)", external_ip)
            return None
        lan = str(upnp.lanaddr)
        # our own port first; another host's mapping of it: a few random ones
        for port in [internal_port, *random.sample(range(20000, 60000), 3)]:
            for lease in (LEASE, 0):  # some IGDv1 routers only accept permanent mappings
                try:
                    upnp.addportmapping(port, "TCP", lan, internal_port, DESCRIPTION, "", lease)
                except Exception as exc:
                    log.debug("UPnP map %s -> %s:%s (lease %s): %s", port, lan, internal_port, lease, exc)
                    continue
                return Mapping(_gateway_host(upnp), external_ip, port, lan, internal_port, lease, time.time())
        return None

    def renew(self, mapping: Mapping) -> bool:
        try:
            self.upnp.addportmapping(mapping.external_port, "TCP", mapping.internal_ip, mapping.internal_port,
                                     DESCRIPTION, "", mapping.lease)
        except Exception as exc:
            log.debug("UPnP renew: %s", exc)
            return False
        return True

    def unmap(self, mapping: Mapping) -> None:
        try:
            self.upnp.deleteportmapping(mapping.external_port, "TCP")
        except Exception as exc:
            log.debug("UPnP unmap: %s", exc)


def _public(ip: str) -> bool:
    try:
        return is_public_ip(multiaddr.Multiaddr(f"/ip4/{ipaddress.IPv4Address(ip)}/tcp/1"))
    except ValueError:
        return False


def _gateway_host(upnp: Any) -> str:
    for attr in ("urls", "controlURL"):
        value = getattr(upnp, attr, None)
        if value:
            return str(value)
    return "UPnP gateway"


class PortMapService:
    """A node Component (on unless --no-port-mapping or listening on loopback)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._host: IHost | None = None
        self.mapping: Mapping | None = None

    def attach(self, host: IHost, dht: object) -> None:
        self._host = host

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self._host is not None
        task_status.started()
        port = int(self._host.get_transport_addrs()[0].value_for_protocol("tcp"))
        gateway = await trio.to_thread.run_sync(Gateway)
        delay = FIRST_SEARCH_MS
        try:
            while True:
                found = await trio.to_thread.run_sync(gateway.find, delay, abandon_on_cancel=True)  # type: ignore[call-arg]
                delay = LATER_SEARCH_MS
                mapping = await trio.to_thread.run_sync(gateway.map, port, abandon_on_cancel=True) if found else None  # type: ignore[call-arg]
                if mapping is None:
                    await trio.sleep(RETRY_NO_GATEWAY)
                    continue
                self._mapped(mapping)
                while True:
                    await trio.sleep(renew_after(mapping.lease))
                    if not await trio.to_thread.run_sync(gateway.renew, mapping, abandon_on_cancel=True):  # type: ignore[call-arg]
                        self._unmapped(mapping)
                        break
        finally:
            if self.mapping is not None:
                mapping = self.mapping
                with trio.CancelScope(shield=True), trio.move_on_after(3):
                    await trio.to_thread.run_sync(gateway.unmap, mapping, abandon_on_cancel=True)  # type: ignore[call-arg]
                self._unmapped(mapping)

    def _mapped(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.node.addresses.set_mapped([multiaddr.Multiaddr(mapping.external)])
        self.node.bus.publish(ev.PortMapped(external=mapping.external, internal=mapping.internal,
                                            gateway=mapping.gateway, lease=mapping.lease))

    def _unmapped(self, mapping: Mapping) -> None:
        self.mapping = None
        self.node.addresses.set_mapped([])
        self.node.bus.publish(ev.PortMapped(external="", internal=mapping.internal, gateway=mapping.gateway,
                                            lease=0, removed=True))
