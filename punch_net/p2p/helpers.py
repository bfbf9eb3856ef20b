"""Plain helpers around py-libp2p that change none of its behaviour (the patches that do
live in punch_net/p2p/patches/)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import multiaddr
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo


def dedupe_providers(providers: Iterable[PeerInfo]) -> list[PeerInfo]:
    """`find_providers` can return one provider twice; merge them by peer id, keeping addrs."""
    merged: dict[ID, PeerInfo] = {}
    for info in providers:
        if info.peer_id in merged:
            known = merged[info.peer_id].addrs
            known.extend(a for a in info.addrs if a not in known)
        else:
            merged[info.peer_id] = PeerInfo(info.peer_id, list(info.addrs))
    return list(merged.values())


async def learn_peer_id(host: IHost, addr: multiaddr.Multiaddr) -> ID:
    """Find who listens at `addr` with a Noise handshake that expects no particular peer.

    `host.connect()` needs a peer id, but users type bootstrap addresses without
    `/p2p/` (the seed's default is `/ip4/127.0.0.1/tcp/51820`). Noise XX tells us the
    responder's identity; we close that probe and dial normally. Callers put a deadline
    around this.
    """
    swarm: Any = host.get_network()
    transport = swarm.transport_manager.transport_for_dialing(addr)
    if transport is None:
        raise OSError(f"no transport can dial {addr}")
    raw = await transport.dial(addr)
    try:
        secure = await swarm.upgrader.security_multistream.secure_outbound(raw, None)
    except BaseException:
        await raw.close()
        raise
    try:
        return secure.get_remote_peer()
    finally:
        await secure.close()


def quiet_libp2p_logging() -> None:
    """py-libp2p's warnings and errors about expected peer failures become debug records
    (punch_net/p2p/logs.py); Punch reports what matters through its own events."""
    from punch_net.p2p.logs import tame_libp2p_logging

    tame_libp2p_logging()


def connection_bytes(conn: Any) -> tuple[int, int]:
    """(received, sent) bytes on a connection's wire since its Noise handshake, as counted
    by the patched transport (patches/noise_batching.py); (0, 0) for a connection without one."""
    transport = conn
    for attr in ("muxed_conn", "secured_conn", "conn"):
        transport = getattr(transport, attr, None)
        if transport is None:
            return 0, 0
    counts = getattr(transport, "__dict__", {})
    return int(counts.get("_punch_in", 0)), int(counts.get("_punch_out", 0))
