"""py-libp2p's AutoNAT server "dials back" over the connection the request came on, so
it always answers OK.

Bug: `AutoNATService._try_dial` calls `host.connect()`, which returns the existing
connection to the requesting peer: every address "works", and a NAT'd node is told it is
public. Fix: a subclass whose dial-back is a fresh connection from scratch
(`network.dial_addr`), with a deadline, closed afterwards.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/host/autonat/autonat.py#L373;
no upstream issue found (go-libp2p discusses
the same class of false positives in https://github.com/libp2p/go-libp2p/issues/1480).
"""

from __future__ import annotations

from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.host.autonat.autonat import AutoNATService
from libp2p.peer.id import ID

DIAL_BACK_TIMEOUT = 5.0


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
