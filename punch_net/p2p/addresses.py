"""Parsing and presenting multiaddrs the way users type them."""

from __future__ import annotations

import socket
import time
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
