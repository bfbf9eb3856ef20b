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
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.utils import write_delimited_msg
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from punch_net.relay.outcomes import HolePunchRecord, Outcome, classify_exception

PROTOCOL_ID = TProtocol("/libp2p/dcutr")
MAX_MESSAGE = 4096
MAX_ATTEMPTS = 3
EXCHANGE_TIMEOUT = 10.0  # one CONNECT/CONNECT/SYNC exchange
PUNCH_TIMEOUT = 6.0  # one round of simultaneous dials, upgrade included
REVERSE_TIMEOUT = 3.0  # B's plain dial to A's public addresses before punching
MAX_ADDRS = 16


# ---------------------------------------------------------------- pure helpers


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


def tcp_ip_port(addr: str) -> tuple[str, int] | None:
    """(ip, port) of a plain /ip4|ip6/.../tcp/N address; None for anything else."""
    parts = addr.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp" or "p2p-circuit" in parts:
        return None
    try:
        return parts[1], int(parts[3])
    except ValueError:
        return None


def predict_addrs(observed: list[str], listen: list[str]) -> list[str]:
    """Addresses a peer should punch to: each observed public IP with each listen port.

    The relay observes our *relay connection's* port, but punch dials leave from the
    listen port and port-preserving NATs map that to the same number.
    """
    ips: list[str] = []
    for addr in observed:
        got = tcp_ip_port(addr)
        if got and got[0] not in ips:
            ips.append(got[0])
    ports: list[tuple[int, int]] = []
    for addr in listen:
        got = tcp_ip_port(addr)
        if got:
            fam = 6 if ":" in got[0] else 4
            if (fam, got[1]) not in ports:
                ports.append((fam, got[1]))
    out: list[str] = []
    for ip in ips:
        fam = 6 if ":" in ip else 4
        for pfam, port in ports:
            if pfam == fam:
                out.append(f"/ip{fam}/{ip}/tcp/{port}")
    return out


_PRIVATE_NETS = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10")]


def is_public_ip(text: str) -> bool:
    """Routable beyond a home LAN. Unlike `ipaddress.is_private`, the 198.18.0.0/15
    benchmark range counts as public: the NAT rig uses it as its internet."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return False
    return not any(ip in net for net in _PRIVATE_NETS)


def punchable(addrs: list[str]) -> list[str]:
    """Plain TCP addresses worth a punch: no circuits, no loopback/unspecified, de-duplicated."""
    out: list[str] = []
    for a in addrs:
        got = tcp_ip_port(a)
        if got is None:
            continue
        try:
            ip = ipaddress.ip_address(got[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_unspecified:
            continue
        bare = f"/ip{ip.version}/{got[0]}/tcp/{got[1]}"
        if bare not in out:
            out.append(bare)
    return out[:MAX_ADDRS]


def encode(kind: int, addrs: list[str]) -> HolePunch:
    msg = HolePunch()
    msg.type = kind  # type: ignore[assignment]
    for a in addrs:
        try:
            msg.ObsAddrs.append(multiaddr.Multiaddr(a).to_bytes())
        except Exception:
            continue
    return msg


def decode_addrs(msg: HolePunch) -> list[str]:
    out = []
    for raw in msg.ObsAddrs:
        try:
            out.append(str(multiaddr.Multiaddr(bytes(raw))))
        except Exception:
            continue
    return out


class ProtocolError(Exception):
    pass


async def read_msg(stream: INetStream, want: int) -> HolePunch:
    data = await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE)
    msg = HolePunch()
    try:
        msg.ParseFromString(data)
    except Exception as exc:
        raise ProtocolError(f"undecodable DCUtR message: {exc}") from None
    if msg.type != want:
        raise ProtocolError(f"expected DCUtR {HolePunch.Type.Name(want)}, got type {msg.type}")  # type: ignore[arg-type]
    return msg


# ---------------------------------------------------------------- the protocol


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

    async def _punch(self, peer: ID, addrs: list[str], as_responder: bool) -> str:
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
            with trio.move_on_after(PUNCH_TIMEOUT):
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

    # -------------------------------------------------- A: answer CONNECT, dial on SYNC

    async def handle_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        n = self._responder_attempts.get(peer, 0) + 1
        self._responder_attempts[peer] = n
        rec = HolePunchRecord(str(peer), "responder", attempts=n)
        try:
            with trio.fail_after(EXCHANGE_TIMEOUT):
                connect = await read_msg(stream, HolePunch.CONNECT)
                rec.remote_addrs = punchable(decode_addrs(connect))
                await write_delimited_msg(stream, encode(HolePunch.CONNECT, self.our_addrs()))
                await read_msg(stream, HolePunch.SYNC)
            if not rec.remote_addrs:
                self.record(rec.finish(Outcome.FAILED, "peer sent no punchable address"))
                return
            rec.direct_addr = await self._punch(peer, rec.remote_addrs, as_responder=False)
            if rec.direct_addr:
                self._responder_attempts.pop(peer, None)
                self.record(rec.finish(Outcome.SUCCESS))
            else:
                self.record(rec.finish(Outcome.FAILED, "no direct connection"))
        except trio.Cancelled:
            self.record(rec.finish(Outcome.CANCELLED, "node stopped"))
            raise
        except ProtocolError as exc:
            self.record(rec.finish(Outcome.PROTOCOL_ERROR, str(exc)))
        except Exception as exc:
            self.record(rec.finish(classify_exception(exc), str(exc) or type(exc).__name__))
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                try:
                    await stream.close()
                except Exception:
                    pass

    # -------------------------------------------------- B: initiate over an inbound relayed connection

    async def initiate(self, peer: ID) -> HolePunchRecord:
        rec = HolePunchRecord(str(peer), "initiator")
        if peer in self.in_progress:
            return rec.finish(Outcome.CANCELLED, "a session with this peer is already running")
        self.in_progress.add(peer)
        try:
            return await self._initiate(peer, rec)
        except trio.Cancelled:
            self.record(rec.finish(Outcome.CANCELLED, "node stopped"))
            raise
        finally:
            self.in_progress.discard(peer)

    async def _initiate(self, peer: ID, rec: HolePunchRecord) -> HolePunchRecord:
        if self.direct_conns(peer):
            self.record(rec.finish(Outcome.CONNECTION_REVERSED, "peer is already directly connected"))
            return rec
        if not self.relayed_conns(peer):
            self.record(rec.finish(Outcome.NO_CONNECTION, "no relayed connection to the peer"))
            return rec
        # Connection reversal first: a public A is simply dialled back.
        if await self._dial_back(peer):
            self.record(rec.finish(Outcome.CONNECTION_REVERSED, "reached the peer by a plain dial"))
            return rec
        last_error = ""
        outcome = Outcome.FAILED
        for attempt in range(1, MAX_ATTEMPTS + 1):
            rec.attempts = attempt
            if self.direct_conns(peer):
                outcome, last_error = Outcome.SUCCESS, ""
                break
            if not self.relayed_conns(peer):
                outcome, last_error = Outcome.NO_CONNECTION, "relayed connection closed"
                break
            try:
                addr = await self._one_round(peer, rec)
            except ProtocolError as exc:
                outcome, last_error = Outcome.PROTOCOL_ERROR, str(exc)
                break
            except Exception as exc:
                outcome, last_error = classify_exception(exc), str(exc) or type(exc).__name__
                if outcome is Outcome.CANCELLED and not self.relayed_conns(peer):
                    outcome = Outcome.NO_CONNECTION
                continue
            if addr:
                rec.direct_addr = addr
                outcome, last_error = Outcome.SUCCESS, ""
                break
            outcome, last_error = Outcome.FAILED, "no direct connection"
        self.record(rec.finish(outcome, last_error))
        return rec

    async def _one_round(self, peer: ID, rec: HolePunchRecord) -> str:
        with trio.fail_after(EXCHANGE_TIMEOUT):
            stream = await self.host.new_stream(peer, [PROTOCOL_ID])
        try:
            with trio.fail_after(EXCHANGE_TIMEOUT):
                await write_delimited_msg(stream, encode(HolePunch.CONNECT, self.our_addrs()))
                t0 = time.monotonic()
                connect = await read_msg(stream, HolePunch.CONNECT)
                rtt = time.monotonic() - t0
                rec.rtt_ms = round(rtt * 1000, 1)
                rec.remote_addrs = punchable(decode_addrs(connect))
                await write_delimited_msg(stream, encode(HolePunch.SYNC, []))
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                try:
                    await stream.close()
                except Exception:
                    pass
        if not rec.remote_addrs:
            raise ProtocolError("peer sent no punchable address")
        await trio.sleep(rtt / 2)
        return await self._punch(peer, rec.remote_addrs, as_responder=True)

    async def _dial_back(self, peer: ID) -> bool:
        """A plain outbound dial to the peer's public (non-private) addresses, if it has any."""
        try:
            known = [str(a) for a in self.host.get_peerstore().addrs(peer)]
        except Exception:
            known = []
        public = [a for a in punchable(known) if is_public_ip(tcp_ip_port(a)[0])]  # type: ignore[index]
        if not public:
            return False
        network: Any = self.host.get_network()

        async def one(addr: str) -> None:
            try:
                await network.dial_addr(multiaddr.Multiaddr(addr), peer)
            except Exception:
                return
            nursery.cancel_scope.cancel()

        with trio.move_on_after(REVERSE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for addr in public:
                    nursery.start_soon(one, addr)
        return bool(self.direct_conns(peer))
