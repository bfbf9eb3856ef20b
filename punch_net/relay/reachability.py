"""Reachability: are we dialable from the internet? (AutoNAT v1 with a real dial-back.)

Every node answers AutoNAT dial-back requests; a node asks the peers it is connected to
(bootstrap/relay nodes first) to dial it back on its listen addresses and on its
predicted public address (observed IP + listen port). py-libp2p's server "dials back"
over the connection the request came on and so always says OK; ours (DialBackService,
punch_net/p2p/patches/autonat_dial_back.py) opens a fresh connection.
"""

from __future__ import annotations

import enum

import multiaddr
from libp2p.abc import IHost
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID
from libp2p.peer.id import ID

from punch_net.p2p.patches.autonat_dial_back import DialBackService

QUERY_TIMEOUT = 12.0


class Reachability(enum.StrEnum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


def verdict(status: int) -> Reachability | None:
    """AutoNAT response status → reachability (None: the server could not judge)."""
    from libp2p.host.autonat.pb.autonat_pb2 import Message

    if status == int(Message.OK):
        return Reachability.PUBLIC
    if status == int(Message.E_DIAL_ERROR):
        return Reachability.PRIVATE
    return None


async def ask(service: DialBackService, server: ID, addrs: list[str]) -> Reachability | None:
    """One dial-back request; None when the server refused or did not answer."""
    return (await ask_with_addr(service, server, addrs))[0]


async def ask_with_addr(service: DialBackService, server: ID,
                        addrs: list[str]) -> tuple[Reachability | None, str | None]:
    """One dial-back request: the verdict and, when public, the address the server
    reached us at (None, None when the server refused or did not answer)."""
    raws = []
    for a in addrs:
        try:
            raws.append(multiaddr.Multiaddr(a).to_bytes())
        except Exception:
            continue
    try:
        status, dialed = await service.query_server(server, raws, timeout=QUERY_TIMEOUT)
    except Exception:
        return None, None
    addr: str | None = None
    if dialed:
        try:
            addr = str(multiaddr.Multiaddr(dialed))
        except Exception:
            addr = None
    return verdict(status), addr


def supports_autonat(host: IHost, peer: ID) -> bool:
    try:
        return str(AUTONAT_PROTOCOL_ID) in [str(p) for p in host.get_peerstore().get_protocols(peer)]
    except Exception:
        return False
