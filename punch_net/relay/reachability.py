"""Reachability: are we dialable from the internet? (AutoNAT v1 with a real dial-back.)

Every node answers AutoNAT dial-back requests; a node asks the peers it is connected to
(bootstrap/relay nodes first) to dial it back on its listen addresses and on its
predicted public address (observed IP + listen port). py-libp2p's server "dials back"
with `host.connect()`, which returns the connection the request came over and so always
says OK; ours opens a fresh connection from scratch, with a deadline, and closes it.
"""

from __future__ import annotations

import enum
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID, AutoNATService
from libp2p.peer.id import ID

DIAL_BACK_TIMEOUT = 5.0
QUERY_TIMEOUT = 12.0


class Reachability(enum.StrEnum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


class DialBackService(AutoNATService):
    """AutoNAT server and client whose dial-back is a fresh connection."""

    def __init__(self, host: IHost) -> None:
        super().__init__(host, serve=True, confirmations=1)  # type: ignore[arg-type]

    async def _try_dial(self, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        network: Any = self.host.get_network()
        for raw in addrs[:8]:
            conn = None
            with trio.move_on_after(DIAL_BACK_TIMEOUT):
                try:
                    conn = await network.dial_addr(multiaddr.Multiaddr(raw), peer_id)
                except Exception:
                    conn = None
            if conn is not None:
                with trio.move_on_after(2):
                    try:
                        await conn.close()
                    except Exception:
                        pass
                return bytes(raw)
        return None


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
    raws = []
    for a in addrs:
        try:
            raws.append(multiaddr.Multiaddr(a).to_bytes())
        except Exception:
            continue
    try:
        status, _ = await service.query_server(server, raws, timeout=QUERY_TIMEOUT)
    except Exception:
        return None
    return verdict(status)


def supports_autonat(host: IHost, peer: ID) -> bool:
    try:
        return str(AUTONAT_PROTOCOL_ID) in [str(p) for p in host.get_peerstore().get_protocols(peer)]
    except Exception:
        return False
