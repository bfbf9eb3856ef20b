"""A flood of silent TCP connections locks every honest peer out of a node.

Bug: the swarm admits inbound connections through one `CapacityLimiter(max_connections -
min_connections)` (`Swarm._handle_inbound_connection`) whose slot is held until the swarm
stops (`await self.manager.wait_finished()` after a successful upgrade), and it has no
per-IP limit and no limit on handshakes in progress. 1,000 silent connections (or, over a
node's life, that many successful ones) fill it, and every later peer is turned away.
Fix (a connection gater at accept, before Noise, as go-libp2p's resource manager does):
each inbound connection takes a connection and a handshake reservation in
`punch_net.rcmgr` (global and per source IP), refused at once (closed) over a limit; the
handshake (Noise + yamux) has its own deadline (`handshake_timeout`); the connection's
reservation is given back when it closes. py-libp2p's own leaking limiter is lifted.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/network/swarm.py#L1947
(`_handle_inbound_connection`); no upstream issue found.
"""

from __future__ import annotations

import contextvars
import math
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.transport.exceptions import SecurityUpgradeFailure
from multiaddr import Multiaddr

from punch_net.rcmgr import Refusal, Reservation, ResourceManager

# The handshake reservation of the inbound connection being upgraded in this task (the
# upgrader runs inside `_handle_inbound_connection`'s task, so the context carries it).
_HANDSHAKE: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar("punch_handshake", default=None)


def remote_endpoint(obj: Any) -> tuple[str, int] | None:
    """(ip, port) of a raw connection, a muxed connection or a stream; None if unknown."""
    try:
        addr = obj.get_remote_address()
    except Exception:
        return None
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return None


class _CloseNotifee(INotifee):
    """Gives a connection's reservation back when the swarm reports it closed."""

    def __init__(self, held: dict[tuple[str, int], Reservation]) -> None:
        self.held = held

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        endpoint = remote_endpoint(conn.muxed_conn)
        if endpoint is not None and endpoint in self.held:
            self.held.pop(endpoint).release()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


def install(host: IHost, rcmgr: ResourceManager) -> None:
    """Gate `host`'s inbound connections through `rcmgr` (before the host listens)."""
    swarm: Any = host.get_network()
    if getattr(swarm, "_punch_gated", False):
        return
    swarm._punch_gated = True
    # py-libp2p's limiter keeps a slot per successful connection until the swarm stops:
    # lift it, the gate below counts live connections instead.
    swarm._inbound_limiter.total_tokens = math.inf
    held: dict[tuple[str, int], Reservation] = {}
    swarm.register_notifee(_CloseNotifee(held))
    original_handle = swarm._handle_inbound_connection

    async def gated(read_write_closer: Any, maddr: Multiaddr) -> None:
        endpoint = remote_endpoint(read_write_closer)
        ip = endpoint[0] if endpoint else ""
        conn = rcmgr.reserve_connection(ip)
        handshake = rcmgr.reserve_handshake(ip) if isinstance(conn, Reservation) else conn
        if isinstance(handshake, Refusal) or isinstance(conn, Refusal):
            if isinstance(conn, Reservation):
                conn.release()
            await _close_quietly(read_write_closer)
            return
        if endpoint is not None:
            held[endpoint] = conn
        token = _HANDSHAKE.set(handshake)
        try:
            await original_handle(read_write_closer, maddr)
        finally:
            _HANDSHAKE.reset(token)
            handshake.release()
            if endpoint is not None and held.get(endpoint) is conn:
                del held[endpoint]
            conn.release()

    swarm._handle_inbound_connection = gated

    upgrader: Any = swarm.upgrader
    original_security = upgrader.upgrade_security
    timeout = rcmgr.limits.handshake_timeout

    async def bounded(raw_conn: Any, is_initiator: bool, peer_id: Any = None) -> Any:
        if is_initiator:
            return await original_security(raw_conn, is_initiator, peer_id)
        handshake = _HANDSHAKE.get()
        try:
            with trio.move_on_after(timeout):
                return await original_security(raw_conn, is_initiator, peer_id)
            raise SecurityUpgradeFailure(f"inbound handshake timed out after {timeout:g}s")
        finally:
            if handshake is not None:
                handshake.release()  # Noise is done: the rest (yamux) is quick and bounded by the swarm

    bounded._punch_bounded = True  # type: ignore[attr-defined]
    upgrader.upgrade_security = bounded


async def _close_quietly(read_write_closer: Any) -> None:
    with trio.move_on_after(1):
        try:
            await read_write_closer.close()
        except Exception:
            pass
