"""`host.connect()` to a peer that accepts TCP and never speaks waits for ever.

Bug: the swarm bounds the TCP dial and the muxer upgrade, but `upgrade_security`
(multistream + Noise) has no timeout; ConnectionConfig's dial/upgrade timeouts do not
cover it (measured: still waiting after 30 s with every timeout set to 2 s). Dials the DHT
makes on its own are not under Punch's `trio.fail_after`, so the host itself must give up.
Per host: wraps that host's upgrader.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/network/swarm.py#L1240
(`upgrade_outbound_raw_conn`) and
https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/transport/upgrader.py#L50; no upstream issue found.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.transport.exceptions import SecurityUpgradeFailure


def install(host: IHost, timeout: float) -> None:
    upgrader: Any = host.get_network().upgrader  # type: ignore[attr-defined]
    original = upgrader.upgrade_security
    if getattr(original, "_punch_bounded", False):
        return

    async def bounded(raw_conn: Any, is_initiator: bool, peer_id: ID | None = None) -> Any:
        with trio.move_on_after(timeout):
            return await original(raw_conn, is_initiator, peer_id)
        raise SecurityUpgradeFailure(f"security handshake timed out after {timeout:g}s")

    bounded._punch_bounded = True  # type: ignore[attr-defined]
    upgrader.upgrade_security = bounded
