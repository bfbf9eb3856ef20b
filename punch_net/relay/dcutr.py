"""DCUtR (Direct Connection Upgrade through Relay) with every attempt recorded.

Spec (libp2p/specs relay/DCUtR.md): B, the peer that *received* a relayed connection,
opens `/libp2p/dcutr` over it and sends CONNECT with its addresses; A answers CONNECT
with its own; B measures the round trip, sends SYNC and dials A after RTT/2, while A
dials B the moment SYNC arrives. On TCP both SYNs cross and the NATs see a simultaneous
open; A is the security-handshake client, B the server. B retries up to 3 times.

Both sides dial from their listen port (SO_REUSEPORT, which py-libp2p's TCP listener
sets), so the NAT's mapping for the punch matches the address we advertise: our WAN IP
as the relay observed it, with our listen port (plain masquerade keeps the port).

py-libp2p ships a DCUtRProtocol, but it only returns True/False; we need the campaign's
outcome labels, the attempt count and timings, so the exchange is ours and the dials
use the swarm's `dial_addr(..., source=...)` / `dial_addr_as_responder(...)`.

The protocol itself (framing, messages, timing, retries, outcomes) is the sans-IO state
machine in dcutr_core.py; this module only carries out its actions on trio and libp2p.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from punch_net.relay.dcutr_core import (
    EXCHANGE_TIMEOUT,
    MAX_ADDRS,
    MAX_ATTEMPTS,
    MAX_MESSAGE,
    PUNCH_TIMEOUT,
    REVERSE_TIMEOUT,
    Action,
    CheckConnections,
    CloseStream,
    Dial,
    DialBack,
    Done,
    Initiator,
    OpenStream,
    Receive,
    Responder,
    Send,
    StartTimer,
    UsageError,
    is_public_ip,
    predict_addrs,
    punchable,
    tcp_ip_port,
)
from punch_net.relay.outcomes import HolePunchRecord, Outcome

# The address helpers and limits moved to the core; manager.py and others import them from here.
__all__ = [
    "EXCHANGE_TIMEOUT", "MAX_ADDRS", "MAX_ATTEMPTS", "MAX_MESSAGE", "PROTOCOL_ID", "PUNCH_TIMEOUT",
    "REVERSE_TIMEOUT", "HolePuncher", "is_public_ip", "is_relayed", "predict_addrs", "punchable", "tcp_ip_port",
]

PROTOCOL_ID = TProtocol("/libp2p/dcutr")


def is_relayed(conn: Any) -> bool:
    try:
        if conn.get_connection_type() == ConnectionType.RELAYED:
            return True
    except Exception:
        pass
    try:
        return any("/p2p-circuit" in str(a) for a in conn.get_transport_addresses())
    except Exception:
        return False


def _finish(rec: HolePunchRecord, done: Done) -> HolePunchRecord:
    rec.attempts = done.attempts
    rec.remote_addrs = list(done.remote_addrs)
    rec.direct_addr = done.direct_addr
    rec.rtt_ms = done.rtt_ms
    return rec.finish(done.outcome, done.error)


class HolePuncher:
    """Runs both DCUtR roles for one host; `record(rec)` receives every finished session."""

    def __init__(self, host: IHost, our_addrs: Callable[[], list[str]],
                 listen_source: Callable[[], tuple[str, int] | None],
                 record: Callable[[HolePunchRecord], None], punching: set[ID]) -> None:
        self.host = host
        self.our_addrs = our_addrs
        self.listen_source = listen_source
        self.record = record
        self.punching = punching  # peers with a punch dial in flight (the node marks connections)
        self.in_progress: set[ID] = set()
        self._responder_attempts: dict[ID, int] = {}

    def install(self) -> None:
        self.host.set_stream_handler(PROTOCOL_ID, self.handle_stream)

    def direct_conns(self, peer: ID) -> list[INetConn]:
        conns = self.host.get_network().get_connections(peer)
        return [c for c in conns if not is_relayed(c)]

    def relayed_conns(self, peer: ID) -> list[INetConn]:
        return [c for c in self.host.get_network().get_connections(peer) if is_relayed(c)]

    async def _punch(self, peer: ID, addrs: tuple[str, ...], as_responder: bool, timeout: float) -> str:
        """Dial every address at once from our listen port; the first direct connection wins."""
        network: Any = self.host.get_network()
        source = self.listen_source()
        won = ""

        async def one(addr: str) -> None:
            nonlocal won
            ma = multiaddr.Multiaddr(addr)
            try:
                if as_responder:
                    await network.dial_addr_as_responder(ma, peer, source)
                else:
                    await network.dial_addr(ma, peer, source)
            except Exception:
                return
            if not won:
                won = addr
            nursery.cancel_scope.cancel()

        self.punching.add(peer)
        try:
            with trio.move_on_after(timeout):
                async with trio.open_nursery() as nursery:
                    for addr in addrs:
                        nursery.start_soon(one, addr)
                    while not self.direct_conns(peer):  # the peer's dial may land first
                        await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()
        finally:
            self.punching.discard(peer)
        if self.direct_conns(peer):
            return won or "inbound"
        return ""

    async def _dial_back(self, peer: ID, addrs: tuple[str, ...], timeout: float) -> bool:
        """A plain outbound dial to the peer's public addresses; True once it is directly connected."""
        network: Any = self.host.get_network()

        async def one(addr: str) -> None:
            try:
                await network.dial_addr(multiaddr.Multiaddr(addr), peer)
            except Exception:
                return
            nursery.cancel_scope.cancel()

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for addr in addrs:
                    nursery.start_soon(one, addr)
        return bool(self.direct_conns(peer))

    # -------------------------------------------------- A: answer CONNECT, dial on SYNC

    async def handle_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        n = self._responder_attempts.get(peer, 0) + 1
        self._responder_attempts[peer] = n
        rec = HolePunchRecord(str(peer), "responder", attempts=n)
        session = Responder(attempt=n)
        try:
            done = await _Driver(self, peer, session, stream).run(
                lambda: session.start(trio.current_time(), self.our_addrs()))
        except trio.Cancelled:
            self.record(_finish(rec, session.cancel()))
            raise
        if done.outcome is Outcome.SUCCESS:
            self._responder_attempts.pop(peer, None)
        self.record(_finish(rec, done))

    # -------------------------------------------------- B: initiate over an inbound relayed connection

    async def initiate(self, peer: ID) -> HolePunchRecord:
        rec = HolePunchRecord(str(peer), "initiator")
        if peer in self.in_progress:
            return rec.finish(Outcome.CANCELLED, "a session with this peer is already running")
        self.in_progress.add(peer)
        session = Initiator()

        def start() -> list[Action]:
            try:
                known = [str(a) for a in self.host.get_peerstore().addrs(peer)]
            except Exception:  # a peer without a peerstore entry has no addresses to dial back
                known = []
            return session.start(trio.current_time(), direct=bool(self.direct_conns(peer)),
                                 relayed=bool(self.relayed_conns(peer)), known_addrs=known)

        try:
            done = await _Driver(self, peer, session).run(start)
        except trio.Cancelled:
            self.record(_finish(rec, session.cancel()))
            raise
        finally:
            self.in_progress.discard(peer)
        self.record(_finish(rec, done))
        return rec


# Raised by our own code, not by the network: they must surface, not become an outcome.
_BUGS = (UsageError, AssertionError)


class _Driver:
    """Carries out one session's actions in order and feeds the results back."""

    def __init__(self, puncher: HolePuncher, peer: ID, session: Initiator | Responder,
                 stream: INetStream | None = None) -> None:
        self.puncher = puncher
        self.peer = peer
        self.session = session
        self.stream = stream
        self.deadline = math.inf

    async def run(self, start: Callable[[], list[Action]]) -> Done:
        """start: the session's first input, whose own inputs (addresses, connections) may fail to read."""
        try:
            pending = deque(self._answer(start))
            while pending:
                action = pending.popleft()
                if isinstance(action, Done):
                    return action
                answer = await self._carry_out(action)
                if answer is not None:  # an answer replaces what is left (a failure drops the rest)
                    pending = deque(answer)
            raise RuntimeError(f"DCUtR session stopped without an outcome in state {self.session.state}")
        finally:
            await self._close()

    def _answer(self, step: Callable[[], list[Action]]) -> list[Action]:
        try:
            return step()
        except _BUGS:
            raise
        except Exception as exc:
            return self.session.io_error(type(exc).__name__, str(exc))

    async def _carry_out(self, action: Action) -> list[Action] | None:
        """None when the action needs no answer; else the session's answer to its result."""
        try:
            return await self._attempt(action)
        except _BUGS:
            raise
        except Exception as exc:
            return self.session.io_error(type(exc).__name__, str(exc))

    async def _attempt(self, action: Action) -> list[Action] | None:
        session = self.session
        match action:
            case StartTimer(deadline):
                self.deadline = deadline
                return None
            case Send(data):
                with trio.move_on_at(self.deadline):
                    await self._stream().write(data)
                    return None
                return self._timed_out()
            case Receive():
                with trio.move_on_at(self.deadline):
                    data = await self._stream().read(MAX_MESSAGE)
                    return session.receive_data(data, trio.current_time())
                return self._timed_out()
            case CloseStream():
                await self._close()
                return None
            case Dial(addrs, delay, timeout, as_responder):
                await trio.sleep(delay)
                addr = await self.puncher._punch(self.peer, addrs, as_responder, timeout)
                return session.dial_result(bool(addr), addr)
        assert isinstance(session, Initiator)  # only B opens streams, looks at connections, dials back
        match action:
            case OpenStream():
                with trio.move_on_at(self.deadline):
                    self.stream = await self.puncher.host.new_stream(self.peer, [PROTOCOL_ID])
                    return session.stream_opened(trio.current_time(), self.puncher.our_addrs())
                return self._timed_out()
            case CheckConnections():
                return session.connections(trio.current_time(), direct=bool(self.puncher.direct_conns(self.peer)),
                                           relayed=bool(self.puncher.relayed_conns(self.peer)))
            case DialBack(addrs, timeout):
                return session.dial_result(await self.puncher._dial_back(self.peer, addrs, timeout))
        raise AssertionError(f"unknown DCUtR action {action!r}")

    def _stream(self) -> INetStream:
        assert self.stream is not None, "the session sent or read before it had a stream"
        return self.stream

    def _timed_out(self) -> list[Action]:
        return self.session.timer_fired(trio.current_time())

    async def _close(self) -> None:
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await stream.close()
            except Exception:
                pass
