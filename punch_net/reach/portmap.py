"""Port mapping (NAT-PMP, then UPnP IGD): ask the router to forward our listen port, keep
the lease renewed, remove it on exit, and advertise the mapped address while it lasts.

miniupnpc (the library py-libp2p's `libp2p.discovery.upnp` wraps) does the SSDP search
and the SOAP calls; it blocks, so every call runs in a thread. py-libp2p's own manager
is not used: it asks for a permanent mapping (lease 0) that outlives a crashed node, and
never renews or re-checks it. With no gateway (or one whose external address is private:
double NAT) nothing is mapped and the node falls back to relays and hole punching, as
before. NAT-PMP (RFC 6886) is a few UDP datagrams to the default gateway, written out
here (`natpmp_*`, pure). miniupnpc is imported only when mapping is on (punch testnet
stubs it).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import multiaddr
import trio
from libp2p.abc import IHost
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.p2p import import_guard
from punch_net.p2p.addresses import is_public_ip

if TYPE_CHECKING:
    from punch_net.node import Node

log = logging.getLogger(__name__)
T = TypeVar("T")
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
        import_guard.release("miniupnpc", "libp2p.discovery.upnp")  # the `punch` executable stubs them
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


# ------------------------------------------------------------------ NAT-PMP (RFC 6886)

NATPMP_PORT = 5351
NATPMP_TRIES = 2  # 250 + 500 ms (the RFC retries 9 times; a LAN gateway answers at once)


def natpmp_external_request() -> bytes:
    return b"\x00\x00"


def natpmp_map_request(internal_port: int, external_port: int, lifetime: int) -> bytes:
    """Map TCP (opcode 2); lifetime 0 with external port 0 deletes the mapping."""
    return struct.pack("!BBHHHI", 0, 2, 0, internal_port, external_port, lifetime)


def natpmp_parse_external(data: bytes) -> str | None:
    if len(data) < 12 or data[1] != 128 or struct.unpack("!H", data[2:4])[0] != 0:
        return None
    return socket.inet_ntoa(data[8:12])


def natpmp_parse_map(data: bytes) -> tuple[int, int, int] | None:
    """(internal port, external port, lifetime) of a successful TCP mapping answer."""
    if len(data) < 16 or data[1] != 130 or struct.unpack("!H", data[2:4])[0] != 0:
        return None
    internal, external, lifetime = struct.unpack("!HHI", data[8:16])
    return internal, external, lifetime


def default_gateway() -> str | None:
    """The IPv4 default gateway (Linux: /proc/net/route), where NAT-PMP is asked."""
    try:
        with open("/proc/net/route") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "00000000" and int(fields[3], 16) & 2:
                    return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    except (OSError, ValueError):
        return None
    return None


class NatPmpGateway:
    """Blocking NAT-PMP calls (run each in a thread)."""

    def __init__(self) -> None:
        self.gateway: str | None = None
        self.external_ip: str | None = None
        self.lan: str = ""

    def _ask(self, request: bytes) -> bytes | None:
        assert self.gateway is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((self.gateway, NATPMP_PORT))
            self.lan = sock.getsockname()[0]
            wait = 0.25
            for _ in range(NATPMP_TRIES):
                sock.settimeout(wait)
                try:
                    sock.send(request)
                    return sock.recv(64)
                except TimeoutError:
                    wait *= 2
                except OSError as exc:  # ICMP port unreachable: no NAT-PMP there
                    log.debug("NAT-PMP: %s", exc)
                    return None
        return None

    def find(self, delay_ms: int) -> bool:
        self.gateway = default_gateway()
        if self.gateway is None:
            return False
        answer = self._ask(natpmp_external_request())
        self.external_ip = natpmp_parse_external(answer) if answer else None
        return self.external_ip is not None

    def map(self, internal_port: int) -> Mapping | None:
        if not self.external_ip or not _public(self.external_ip):
            return None
        answer = self._ask(natpmp_map_request(internal_port, internal_port, LEASE))
        got = natpmp_parse_map(answer) if answer else None
        if got is None:
            return None
        _, external, lifetime = got
        return Mapping(f"NAT-PMP {self.gateway}", self.external_ip, external, self.lan, internal_port,
                       lifetime, time.time())

    def renew(self, mapping: Mapping) -> bool:
        answer = self._ask(natpmp_map_request(mapping.internal_port, mapping.external_port, LEASE))
        got = natpmp_parse_map(answer) if answer else None
        return got is not None and got[1] == mapping.external_port

    def unmap(self, mapping: Mapping) -> None:
        self._ask(natpmp_map_request(mapping.internal_port, 0, 0))


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """A blocking gateway call in a thread, left behind (not waited for) if we are cancelled."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)  # type: ignore[call-arg,no-any-return]


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
        # NAT-PMP first: one datagram to the default gateway, answered (or refused with an
        # ICMP error) in milliseconds, where a UPnP search waits its whole delay
        gateways: list[Gateway | NatPmpGateway] = [NatPmpGateway()]
        try:
            gateways.append(await trio.to_thread.run_sync(Gateway))
        except Exception as exc:  # no miniupnpc: NAT-PMP alone; never a reason to stop the node
            self.node.bus.publish(ev.ErrorEvent(message=f"UPnP is off: {exc}", where="portmap"))
        gateway: Gateway | NatPmpGateway = gateways[0]
        delay = FIRST_SEARCH_MS
        try:
            while True:
                mapping = None
                for gateway in gateways:
                    found = await _in_thread(gateway.find, delay)
                    mapping = await _in_thread(gateway.map, port) if found else None
                    if mapping is not None:
                        break
                delay = LATER_SEARCH_MS
                if mapping is None:
                    await trio.sleep(RETRY_NO_GATEWAY)
                    continue
                self._mapped(mapping)
                while True:
                    await trio.sleep(renew_after(mapping.lease))
                    if not await _in_thread(gateway.renew, mapping):
                        self._unmapped(mapping)
                        break
        finally:
            if self.mapping is not None:
                mapping = self.mapping
                with trio.CancelScope(shield=True), trio.move_on_after(3):
                    await _in_thread(gateway.unmap, mapping)
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
