"""Parsing and presenting multiaddrs the way users type them."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import multiaddr
import multihash
import psutil
from libp2p.peer.id import ID


class AddressError(ValueError):
    """A multiaddr a user gave that we cannot use; the message is one line for humans."""


@dataclass(frozen=True)
class DialTarget:
    """A transport address plus, when the user gave one, the expected peer id."""

    addr: multiaddr.Multiaddr  # without /p2p/
    peer_id: ID | None

    def __str__(self) -> str:
        return str(self.addr) + (f"/p2p/{self.peer_id}" if self.peer_id else "")


def parse_dial_target(text: str) -> DialTarget:
    """Parse `/ip4|ip6|dns4|dns6|dns/HOST/tcp/PORT[/p2p/ID]`."""
    text = text.strip()
    try:
        ma = multiaddr.Multiaddr(text)
    except Exception as exc:
        raise AddressError(f"malformed multiaddr {text!r}: {exc}") from None
    protos = [p.name for p in ma.protocols()]
    peer_id: ID | None = None
    if "p2p" in protos:
        if protos[-1] != "p2p":
            raise AddressError(f"unsupported multiaddr {text!r}: /p2p/ must come last")
        try:
            peer_id = ID.from_base58(ma.value_for_protocol("p2p"))
        except Exception:
            raise AddressError(f"multiaddr {text!r} has an invalid peer id") from None
        ma = ma.decapsulate(multiaddr.Multiaddr(f"/p2p/{ma.value_for_protocol('p2p')}"))
        protos = protos[:-1]
    if "p2p-circuit" in protos:
        raise AddressError(f"relay addresses are not supported here: {text!r}")
    if len(protos) != 2 or protos[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or protos[1] != "tcp":
        raise AddressError(f"unsupported multiaddr {text!r}: expected /ip4/HOST/tcp/PORT[/p2p/ID]")
    port = int(ma.value_for_protocol("tcp"))
    if not 0 < port < 65536:
        raise AddressError(f"multiaddr {text!r} has port {port}: expected 1-65535")
    return DialTarget(ma, peer_id)


def resolve_dns(target: DialTarget) -> list[multiaddr.Multiaddr]:
    """Turn /dns*/ into /ip4|ip6/ addresses (blocking: call in a thread)."""
    protos = [p.name for p in target.addr.protocols()]
    if protos[0] in ("ip4", "ip6"):
        return [target.addr]
    host = target.addr.value_for_protocol(protos[0])
    port = target.addr.value_for_protocol("tcp")
    family = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(protos[0], 0)
    try:
        infos = socket.getaddrinfo(host, int(port), family, socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressError(f"cannot resolve {host!r}: {exc}") from None
    out: list[multiaddr.Multiaddr] = []
    for fam, _, _, _, sockaddr in infos:
        kind = "ip4" if fam == socket.AF_INET else "ip6"
        ma = multiaddr.Multiaddr(f"/{kind}/{sockaddr[0]}/tcp/{port}")
        if ma not in out:
            out.append(ma)
    return out


def listen_multiaddr(host: str, port: int) -> multiaddr.Multiaddr:
    kind = "ip6" if ":" in host else "ip4"
    try:
        return multiaddr.Multiaddr(f"/{kind}/{host}/tcp/{port}")
    except Exception as exc:
        raise AddressError(f"bad listen address {host!r}: {exc}") from None


_IP_CACHE: dict[bool, tuple[float, list[str]]] = {}
_IP_CACHE_TTL = 30.0


def local_interface_ips(ipv6: bool = False) -> list[str]:
    """Addresses of this machine's interfaces, loopback last, for presenting 0.0.0.0.

    Cached briefly: identify asks for our addresses on every new connection."""
    now = time.monotonic()
    cached = _IP_CACHE.get(ipv6)
    if cached and now - cached[0] < _IP_CACHE_TTL:
        return cached[1]
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    found: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == family and a.address not in found and "%" not in a.address:
                found.append(a.address)
    loop = [a for a in found if a.startswith("127.") or a == "::1"]
    result = [a for a in found if a not in loop] + loop
    _IP_CACHE[ipv6] = (now, result)
    return result


def expand_unspecified(addrs: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """Replace 0.0.0.0 / :: with real interface addresses, as others must dial those."""
    out: list[multiaddr.Multiaddr] = []
    for ma in addrs:
        text = str(ma)
        if text.startswith("/ip4/0.0.0.0/"):
            out += [multiaddr.Multiaddr(text.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/", 1))
                    for ip in local_interface_ips()]
        elif text.startswith("/ip6/::/"):
            out += [multiaddr.Multiaddr(text.replace("/ip6/::/", f"/ip6/{ip}/", 1))
                    for ip in local_interface_ips(ipv6=True)]
        else:
            out.append(ma)
    return out


def short_peer_id(peer_id: str | ID, n: int = 8) -> str:
    text = str(peer_id)
    return text if len(text) <= n + 4 else f"{text[:4]}…{text[-n:]}"


def is_peer_id(text: str) -> bool:
    """Is `text` a well-formed base58 peer id: a public key inlined (identity multihash)
    or a sha2-256 of one? Any base58 decodes, so a half-typed id must not pass."""
    try:
        peer = ID.from_base58(text)
        digest = multihash.decode(peer.to_bytes())
    except Exception:
        return False
    if digest.func == multihash.Func.identity:
        return peer.extract_public_key() is not None
    return digest.func == multihash.Func.sha2_256 and len(digest.digest) == 32


# ------------------------------------------------------------------ what we advertise


def parse_announce(text: str) -> multiaddr.Multiaddr:
    """An `--announce` address: `/ip4|ip6|dns*/HOST/tcp/PORT` (a `/p2p/` tail is dropped:
    `host.get_addrs()` appends our own)."""
    return parse_dial_target(text).addr


@dataclass(frozen=True)
class NoAnnounce:
    """An `--no-announce` rule, as kubo's `Addresses.NoAnnounce`: one exact address, or
    every address inside a network (`/ip4/10.0.0.0/ipcidr/8`)."""

    exact: multiaddr.Multiaddr | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None

    def matches(self, addr: multiaddr.Multiaddr) -> bool:
        if self.exact is not None:
            return _without_p2p(addr) == self.exact
        ip = _ip_of(addr)
        return ip is not None and self.network is not None and ip.version == self.network.version \
            and ip in self.network


def parse_no_announce(text: str) -> NoAnnounce:
    text = text.strip()
    try:
        ma = multiaddr.Multiaddr(text)
    except Exception as exc:
        raise AddressError(f"malformed multiaddr {text!r}: {exc}") from None
    protos = [p.name for p in ma.protocols()]
    if protos[:1] in (["ip4"], ["ip6"]) and protos[1:] == ["ipcidr"]:
        try:
            net = ipaddress.ip_network(f"{ma.value_for_protocol(protos[0])}/{ma.value_for_protocol('ipcidr')}",
                                       strict=False)
        except ValueError as exc:
            raise AddressError(f"bad network {text!r}: {exc}") from None
        return NoAnnounce(None, net)
    return NoAnnounce(parse_dial_target(text).addr, None)


def _without_p2p(addr: multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    text = str(addr)
    cut = text.find("/p2p/")
    return multiaddr.Multiaddr(text[:cut]) if cut > 0 else addr


def _ip_of(addr: multiaddr.Multiaddr) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    for proto in ("ip4", "ip6"):
        try:
            return ipaddress.ip_address(addr.value_for_protocol(proto))
        except Exception:
            continue
    return None


def is_public_ip(addr: multiaddr.Multiaddr) -> bool:
    """Globally routable (the rig's 198.18.0.0/15 "internet" counts, as it stands in for it)."""
    ip = _ip_of(addr)
    if ip is None:
        return False
    return ip.is_global or (ip.version == 4 and ip in _BENCHMARK_NET)


_BENCHMARK_NET = ipaddress.ip_network("198.18.0.0/15")
AddrsListener = Callable[[list[str]], None]


class AdvertisedAddrs:
    """The one place that decides what this node advertises: `host.get_addrs()`'s
    addrs factory, which identify, the DHT's peer and provider records and the printed
    "others should use" line all read.

    `--announce` replaces everything else (kubo's `Addresses.Announce`); without it: the
    port-mapped addresses, the confirmed observed ones, then the listen addresses with
    0.0.0.0 expanded. `--no-announce` rules filter the result."""

    def __init__(self, announce: Sequence[str] = (), no_announce: Sequence[str] = ()) -> None:
        self.announce = [parse_announce(a) for a in announce]
        self.no_announce = [parse_no_announce(a) for a in no_announce]
        self._observed: list[multiaddr.Multiaddr] = []
        self._mapped: list[multiaddr.Multiaddr] = []
        self._listeners: list[AddrsListener] = []
        self._last: list[str] | None = None
        self._last_transport: list[multiaddr.Multiaddr] = []
        self._transport: Callable[[], list[multiaddr.Multiaddr]] | None = None
        # bumped whenever what compute() reads changes (patches/addrs_cache.py keys on it)
        self.generation = 0

    def bind_transport(self, transport: Callable[[], list[multiaddr.Multiaddr]]) -> None:
        """Read the listen addresses from `transport()` (the host's `get_transport_addrs`)
        instead of the candidates py-libp2p passes, which include its own observed
        addresses (patches/observed_addrs.py says why ours decide)."""
        self._transport = transport
        self.generation += 1

    def on_change(self, listener: AddrsListener) -> None:
        """`listener(addrs)` after `set_observed` / `set_mapped` change what we advertise."""
        self._listeners.append(listener)

    @property
    def observed(self) -> list[str]:
        return [str(a) for a in self._observed]

    @property
    def mapped(self) -> list[str]:
        return [str(a) for a in self._mapped]

    def set_observed(self, addrs: Sequence[multiaddr.Multiaddr]) -> None:
        self._observed = list(addrs)
        self.generation += 1
        self._changed()

    def set_mapped(self, addrs: Sequence[multiaddr.Multiaddr]) -> None:
        self._mapped = list(addrs)
        self.generation += 1
        self._changed()

    def _changed(self) -> None:
        if self._last is None:  # nothing advertised yet: the host is not listening
            return
        now = [str(a) for a in self.compute(self._last_transport)]
        if now != self._last:
            self._last = now
            for listener in self._listeners:
                listener(now)

    def compute(self, transport: Sequence[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        """Pure: the advertised list for these listen (transport) addresses."""
        if self.announce:
            chosen = list(self.announce)
        else:
            chosen = self._mapped + self._observed + expand_unspecified(list(transport))
        out: list[multiaddr.Multiaddr] = []
        for addr in chosen:
            if addr not in out and not any(rule.matches(addr) for rule in self.no_announce):
                out.append(addr)
        return out

    def __call__(self, candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        self._last_transport = list(self._transport() if self._transport is not None else candidates)
        result = self.compute(self._last_transport)
        self._last = [str(a) for a in result]
        return result
