"""Bug-then-fix tests for the resource-manager patches (punch_net/p2p/patches/rcmgr_*,
yamux_window_cap): first the bug on py-libp2p as Punch used it before, then the fix.
In-process hosts; attackers dial from 127.0.0.2, honest peers from 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from attackers import ATTACKER_IP, attacker_host, hold_silent_kad_streams
from libp2p.abc import IHost
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service
from punch_harness import host_addr, kad_find_node, libp2p_host, peer_info_of

from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.p2p.patches import rcmgr_conn_gate, rcmgr_streams
from punch_net.p2p.patches.kad_inbound_guard import install_kad_read_deadline
from punch_net.p2p.patches.yamux_window_cap import INBOUND_WINDOW_CAP, cap_receive_window
from punch_net.rcmgr import Limits, ResourceManager

quiet_libp2p_logging()


@pytest.fixture(autouse=True)
def _attacker_ip_usable() -> None:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((ATTACKER_IP, 0))
        except OSError:
            pytest.skip(f"{ATTACKER_IP} is not a local address here")


@asynccontextmanager
async def kad_server(rcmgr: ResourceManager | None) -> AsyncIterator[tuple[IHost, KadDHT]]:
    """A DHT server: Punch's old guard (read deadline 30 s, 4 streams per peer) when
    `rcmgr` is None, else the resource manager's."""
    async with libp2p_host() as host:
        dht = KadDHT(host, DHTMode.SERVER)
        if rcmgr is None:
            install_kad_read_deadline(host, dht.handle_stream, deadline=30.0)
        else:
            rcmgr_streams.install_kad(host, dht, rcmgr, per_read=30.0)
        async with background_trio_service(dht):
            yield host, dht


async def silent_kad_identities(nursery: trio.Nursery, target: PeerInfo, identities: int, per: int) -> list[int]:
    opened = [0]

    async def one(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with attacker_host() as host:
            task_status.started()
            await hold_silent_kad_streams(host, target, per, opened)

    for _ in range(identities):
        await nursery.start(one)
    with trio.fail_after(20):
        while opened[0] < min(identities * per, 12):
            await trio.sleep(0.05)
    return opened


# ---------------------------------------------------------------- rcmgr_streams


async def test_bug_three_identities_starve_the_per_peer_capped_kad_server() -> None:
    async with kad_server(None) as (server, dht), libp2p_host() as honest, trio.open_nursery() as nursery:
        target = peer_info_of(host_addr(server))
        await honest.connect(target)
        await kad_find_node(honest, server.get_id())  # served while idle
        await silent_kad_identities(nursery, target, 3, 4)
        with trio.fail_after(10):
            while dht._inbound_limiter.borrowed_tokens < 12:
                await trio.sleep(0.05)
        with pytest.raises(Exception):  # noqa: B017 - reset or timeout: any failure shows the bug
            await kad_find_node(honest, server.get_id(), timeout=3)
        nursery.cancel_scope.cancel()


async def test_fix_identities_behind_one_ip_share_its_kad_streams() -> None:
    """10 identities × 4 silent streams; the first-byte deadline is long (30 s) so that
    only the limits can be what lets the honest peer in."""
    rm = ResourceManager(Limits(first_byte_timeout=30, streams_per_protocol=24, streams_per_protocol_per_ip=16))
    async with kad_server(rm) as (server, _dht), libp2p_host() as honest, trio.open_nursery() as nursery:
        target = peer_info_of(host_addr(server))
        await honest.connect(target)
        await silent_kad_identities(nursery, target, 10, 4)
        with trio.fail_after(10):
            while rm.used("protocol", "/ipfs/kad/1.0.0", "streams") < 16:
                await trio.sleep(0.05)
        for _ in range(5):
            await kad_find_node(honest, server.get_id(), timeout=5)
        assert rm.used("protocol-ip", f"/ipfs/kad/1.0.0 {ATTACKER_IP}", "streams") == 16
        assert rm.blocked[("inbound", "protocol-ip", "streams")] > 0
        nursery.cancel_scope.cancel()


async def test_fix_first_byte_deadline_ends_a_silent_stream() -> None:
    rm = ResourceManager(Limits(first_byte_timeout=0.5))
    async with kad_server(rm) as (server, _dht), attacker_host() as attacker:
        target = peer_info_of(host_addr(server))
        await attacker.connect(target)
        stream = await attacker.new_stream(server.get_id(), [rcmgr_streams.KAD_PROTOCOL])
        with trio.fail_after(10):
            with pytest.raises(Exception):  # noqa: B017 - reset by the server
                await stream.read(1)
            while rm.usage():
                await trio.sleep(0.05)


# ---------------------------------------------------------------- rcmgr_streams: every protocol, and none yet

PING = "/ipfs/ping/1.0.0"
AUTONAT = "/libp2p/autonat/1.0.0"


async def open_silent(attacker: IHost, server: IHost, protocol: str | None, n: int) -> list[Any]:
    """`n` streams from `attacker` that never send a byte of their own (None: raw yamux
    streams that never start multistream-select). A stream refused during its own
    negotiation counts as ended at once (it is not in the list)."""
    streams: list[Any] = []
    with trio.fail_after(20):
        for _ in range(n):
            try:
                if protocol is None:
                    conn = attacker.get_network().get_connections(server.get_id())[0]  # type: ignore[attr-defined]
                    streams.append(await conn.muxed_conn.open_stream())
                else:
                    streams.append(await attacker.new_stream(server.get_id(), [protocol]))  # type: ignore[list-item]
            except Exception:
                pass
    return streams


async def ended_within(streams: list[Any], seconds: float) -> int:
    """How many of `streams` the server reset or closed within `seconds`."""
    ended = [0]

    async def watch(stream: Any) -> None:
        try:
            while await stream.read(1024):  # the server may speak first (multistream's header)
                pass
        except Exception:
            pass
        ended[0] += 1

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(watch, stream)
    return ended[0]


def held(server: IHost, peer: IHost) -> int:
    """Inbound and outbound streams `server` holds with `peer` (its swarm's own count)."""
    conns = server.get_network().get_connections(peer.get_id())  # type: ignore[attr-defined]
    return sum(len(conn.streams) for conn in conns)


async def wait_held(server: IHost, peer: IHost, at_least: int) -> None:
    with trio.fail_after(15):
        while held(server, peer) < at_least:
            await trio.sleep(0.05)


@asynccontextmanager
async def gated_server(rm: ResourceManager | None) -> AsyncIterator[IHost]:
    """A host serving ping and AutoNAT (py-libp2p's service), through `rm`'s stream gate if given."""
    from libp2p.host.autonat.autonat import AutoNATService

    async with libp2p_host() as host:
        AutoNATService(host)  # type: ignore[arg-type]
        if rm is not None:
            rcmgr_streams.install(host, rm)
        yield host


async def test_bug_one_peer_holds_as_many_silent_autonat_streams_as_it_opens() -> None:
    """(py-libp2p's ping handler has its own cap of 2 a peer; AutoNAT and the rest have none.)"""
    async with gated_server(None) as server, attacker_host() as attacker:
        await attacker.connect(peer_info_of(host_addr(server)))
        streams = await open_silent(attacker, server, AUTONAT, 60)
        await wait_held(server, attacker, 60)  # all of them, no limit
        assert await ended_within(streams, 1.0) == 0  # none refused


async def test_fix_silent_streams_of_any_protocol_are_refused_at_once_over_the_limits() -> None:
    rm = ResourceManager(Limits(first_byte_timeout=30))  # only the limits can end them here
    async with gated_server(rm) as server, attacker_host() as attacker, libp2p_host() as honest:
        target = peer_info_of(host_addr(server))
        await attacker.connect(target)
        pings = await open_silent(attacker, server, PING, 30)
        autonats = await open_silent(attacker, server, AUTONAT, 30)
        ping_share = rm.protocol_limits(PING).per_peer
        autonat_share = rm.protocol_limits(AUTONAT).per_peer
        assert ping_share is not None and autonat_share is not None
        # The streams over the peer's share of each protocol are reset at once, not queued.
        assert await ended_within(pings[ping_share:] + autonats[autonat_share:], 2.0) == (
            len(pings) - ping_share + len(autonats) - autonat_share)
        assert rm.used("protocol-peer", f"{PING} {attacker.get_id()}", "streams") == ping_share
        assert rm.used("protocol-peer", f"{AUTONAT} {attacker.get_id()}", "streams") == autonat_share
        assert rm.blocked[("inbound", "protocol-peer", "streams")] >= 50
        # An honest peer is served meanwhile.
        await honest.connect(target)
        await kad_find_node_or_ping(honest, server)
        await attacker.disconnect(server.get_id())
        with trio.fail_after(15):
            while rm.usage():  # given back as the handlers end
                await trio.sleep(0.05)


async def test_fix_a_silent_autonat_stream_meets_the_first_byte_deadline() -> None:
    """py-libp2p's AutoNAT handler reads with no deadline (the bug half above holds its
    streams for as long as the peer likes); through the gate its first byte is timed."""
    rm = ResourceManager(Limits(first_byte_timeout=0.5))
    async with gated_server(rm) as server, attacker_host() as attacker:
        await attacker.connect(peer_info_of(host_addr(server)))
        streams = await open_silent(attacker, server, AUTONAT, 2)
        assert await ended_within(streams, 10) == 2
        with trio.fail_after(10):
            while rm.usage():
                await trio.sleep(0.05)


async def test_bug_unnegotiated_streams_are_held_without_limit() -> None:
    async with gated_server(None) as server, attacker_host() as attacker:
        await attacker.connect(peer_info_of(host_addr(server)))
        streams = await open_silent(attacker, server, None, 100)
        await wait_held(server, attacker, 100)  # every one, each for py-libp2p's 10 s deadline
        assert await ended_within(streams, 1.0) == 0


async def test_fix_unnegotiated_streams_are_bounded_per_peer_and_timed_out() -> None:
    rm = ResourceManager(Limits(negotiation_timeout=1.5, streams_negotiating_per_peer=16))
    async with gated_server(rm) as server, attacker_host() as attacker, libp2p_host() as honest:
        target = peer_info_of(host_addr(server))
        await attacker.connect(target)
        start = trio.current_time()
        streams = await open_silent(attacker, server, None, 100)
        with trio.fail_after(10):
            while rm.blocked[("inbound", "transient-peer", "streams")] < 84:
                await trio.sleep(0.05)
        assert rm.used("transient-peer", str(attacker.get_id()), "streams") <= 16
        assert held(server, attacker) <= 16
        await honest.connect(target)
        await kad_find_node_or_ping(honest, server)  # honest streams negotiate meanwhile
        # The 16 admitted meet the negotiation deadline; the rest were reset at once.
        assert await ended_within(streams, 10) == 100
        assert trio.current_time() - start < 12
        with trio.fail_after(10):
            while rm.usage() or held(server, attacker):
                await trio.sleep(0.05)


# ---------------------------------------------------------------- rcmgr_conn_gate


async def test_bug_inbound_limiter_keeps_a_slot_for_every_closed_connection() -> None:
    """py-libp2p's inbound limiter holds a slot until the swarm stops, not until the
    connection closes: over a node's life the slots run out."""
    async with libp2p_host() as server, libp2p_host() as peer:
        limiter = server.get_network()._inbound_limiter  # type: ignore[attr-defined]
        before = limiter.borrowed_tokens
        await peer.connect(peer_info_of(host_addr(server)))
        await peer.disconnect(server.get_id())
        with trio.fail_after(10):
            while server.get_network().get_connections(peer.get_id()):  # type: ignore[attr-defined]
                await trio.sleep(0.05)
        await trio.sleep(0.2)
        assert limiter.borrowed_tokens == before + 1  # the slot stays taken


async def test_bug_silent_connections_fill_the_inbound_limiter() -> None:
    async with libp2p_host() as server:
        swarm: Any = server.get_network()
        swarm._inbound_limiter.total_tokens = 8  # stands for py-libp2p's 1,000
        port = int(host_addr(server).split("/tcp/")[1].split("/")[0])
        socks = [await trio.open_tcp_stream("127.0.0.1", port, local_address=ATTACKER_IP) for _ in range(8)]
        with trio.fail_after(10):
            while swarm._inbound_limiter.borrowed_tokens < 8:
                await trio.sleep(0.05)
        async with libp2p_host(dial_timeout=2) as honest:
            with pytest.raises(Exception):  # noqa: B017
                await honest.connect(peer_info_of(host_addr(server)))
        for s in socks:
            await s.aclose()


async def test_fix_gate_refuses_over_the_per_ip_limit_at_once_and_lets_others_in() -> None:
    rm = ResourceManager(Limits(handshakes_per_ip=4, handshake_timeout=1.0))
    async with libp2p_host() as server:
        rcmgr_conn_gate.install(server, rm)
        port = int(host_addr(server).split("/tcp/")[1].split("/")[0])
        socks = [await trio.open_tcp_stream("127.0.0.1", port, local_address=ATTACKER_IP) for _ in range(50)]
        # Over the limit: closed at once, before any handshake (an EOF well inside the 1 s deadline).
        closed_fast = 0
        with trio.move_on_after(0.8):
            for s in socks[4:]:
                if await s.receive_some(1) == b"":
                    closed_fast += 1
        assert closed_fast == 46
        assert rm.used("ip", ATTACKER_IP, "handshakes") == 4
        async with libp2p_host() as honest:  # another address: in, despite the flood
            with trio.fail_after(10):
                await honest.connect(peer_info_of(host_addr(server)))
            await kad_find_node_or_ping(honest, server)
            assert rm.used("ip", "127.0.0.1", "connections") == 1
            await honest.disconnect(server.get_id())
            with trio.fail_after(10):
                while rm.used("ip", "127.0.0.1", "connections"):
                    await trio.sleep(0.05)  # given back when the connection closes
        # The silent ones within the limit meet the handshake deadline.
        with trio.fail_after(10):
            for s in socks[:4]:
                while await s.receive_some(1024):  # the multistream header, then EOF
                    pass
            while rm.usage():
                await trio.sleep(0.05)
        for s in socks:
            await s.aclose()


async def kad_find_node_or_ping(host: IHost, server: IHost) -> None:
    """The connection carries a stream (ping), i.e. the handshake really finished."""
    from libp2p.host.ping import ID as PING

    with trio.fail_after(10):
        stream = await host.new_stream(server.get_id(), [PING])
        await stream.write(b"x" * 32)
        assert len(await stream.read(32)) == 32
        await stream.close()


# ---------------------------------------------------------------- yamux_window_cap


async def grown_window(cap: int | None) -> int:
    """Send 16 MiB on one inbound stream, read as fast as possible; the receiver's window
    target at the end. `cap=None`: the stream opts out of the cap (py-libp2p's tuning)."""
    targets: list[int] = []
    done = trio.Event()
    async with libp2p_host() as receiver, libp2p_host() as sender:

        async def handler(stream: Any) -> None:
            if cap is None:
                cap_receive_window(stream, None)
            got = 0
            while got < 16 << 20:
                got += len(await stream.read(1 << 20))
            targets.append(stream.muxed_stream.target_recv_window)
            done.set()

        receiver.set_stream_handler("/test/bulk", handler)  # type: ignore[arg-type]
        await sender.connect(peer_info_of(host_addr(receiver)))
        stream = await sender.new_stream(receiver.get_id(), ["/test/bulk"])  # type: ignore[list-item]
        with trio.fail_after(60):
            for _ in range(16):
                await stream.write(b"\0" * (1 << 20))
            await done.wait()
    return targets[0]


async def test_bug_and_fix_inbound_yamux_window_does_not_grow() -> None:
    assert await grown_window(None) > INBOUND_WINDOW_CAP  # the bug: auto-tuning grew it
    assert await grown_window(INBOUND_WINDOW_CAP) == INBOUND_WINDOW_CAP  # the fix: inbound stays at the cap
