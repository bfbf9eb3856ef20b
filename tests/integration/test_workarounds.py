"""Each py-libp2p 0.8.1 bug Punch works around (punch_net/p2p/workarounds.py, host.py):
first the bug on plain py-libp2p, then the fix. If a test's "bug" half starts failing,
upstream fixed it and the workaround can go.

In-process hosts on 127.0.0.1 (the kad server's internals are inspected directly).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.abc import IHost
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service
from punch_harness import (
    SilentPeer,
    host_addr,
    kad_find_node,
    libp2p_host,
    open_stalled_streams,
    peer_info_of,
    port_accepts,
)

from punch_net.config import NodeConfig
from punch_net.dht.keys import dht_key, namespace_multihash
from punch_net.messaging.protocol import read_some
from punch_net.node import Node
from punch_net.p2p.host import build_host
from punch_net.p2p.identity import new_identity
from punch_net.p2p.workarounds import (
    KAD_STREAMS_PER_PEER,
    dedupe_providers,
    install_kad_read_deadline,
    learn_peer_id,
    no_happy_eyeballs_tail_delay,
    quiet_libp2p_logging,
)

quiet_libp2p_logging()


@asynccontextmanager
async def kad_server(deadline: float | None) -> AsyncIterator[tuple[IHost, KadDHT]]:
    """A DHT server host: plain py-libp2p (deadline=None) or with Punch's kad guard."""
    async with libp2p_host() as host:
        dht = KadDHT(host, DHTMode.SERVER)
        if deadline is not None:
            install_kad_read_deadline(host, dht.handle_stream, deadline=deadline)
        async with background_trio_service(dht):
            yield host, dht


async def connect(a: IHost, b: IHost) -> None:
    with trio.fail_after(10):
        await a.connect(peer_info_of(host_addr(b)))


async def wait_borrowed(dht: KadDHT, n: int, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while dht._inbound_limiter.borrowed_tokens < n:
            await trio.sleep(0.02)


# ---------------------------------------------------------------- kad inbound starvation


async def test_bug_stalled_kad_streams_starve_a_plain_dht() -> None:
    """12 silent kad streams fill py-libp2p's inbound limiter; honest peers get reset."""
    async with kad_server(None) as (server, dht), libp2p_host() as attacker, libp2p_host() as honest:
        await connect(attacker, server)
        await connect(honest, server)
        await kad_find_node(honest, server.get_id())  # served while idle
        stalled = await open_stalled_streams(attacker, server.get_id(), str(KAD_PROTOCOL), 12)
        assert len(stalled) == 12
        await wait_borrowed(dht, 12)
        with pytest.raises(Exception):  # noqa: B017 - reset stream or timeout: any failure shows the bug
            await kad_find_node(honest, server.get_id(), timeout=3)
        await trio.sleep(1.5)  # and it does not heal by itself: there is no read deadline
        assert dht._inbound_limiter.borrowed_tokens == 12


async def test_fix_per_peer_cap_keeps_one_attacker_from_filling_the_server() -> None:
    async with kad_server(30.0) as (server, dht), libp2p_host() as attacker, libp2p_host() as honest:
        await connect(attacker, server)
        await connect(honest, server)
        await open_stalled_streams(attacker, server.get_id(), str(KAD_PROTOCOL), 16)
        await trio.sleep(0.3)
        assert dht._inbound_limiter.borrowed_tokens <= KAD_STREAMS_PER_PEER
        start = time.monotonic()
        await kad_find_node(honest, server.get_id(), timeout=5)
        assert time.monotonic() - start < 3


async def test_fix_read_deadline_frees_slots_held_by_many_attackers() -> None:
    """Three attackers x 4 streams fill all 12 slots; the read deadline frees them."""
    deadline = 1.0
    async with kad_server(deadline) as (server, dht), libp2p_host() as honest, \
            libp2p_host() as a1, libp2p_host() as a2, libp2p_host() as a3:
        for attacker in (a1, a2, a3, honest):
            await connect(attacker, server)
        for attacker in (a1, a2, a3):
            await open_stalled_streams(attacker, server.get_id(), str(KAD_PROTOCOL), KAD_STREAMS_PER_PEER)
        await wait_borrowed(dht, 12)
        start = time.monotonic()
        answered = False
        with trio.move_on_after(deadline + 8):
            while not answered:
                try:
                    await kad_find_node(honest, server.get_id(), timeout=3)
                    answered = True
                except Exception:
                    await trio.sleep(0.1)  # reset while full: a real client retries too
        assert answered, "honest peer never served"
        assert time.monotonic() - start < deadline + 8
        with trio.fail_after(5):
            while dht._inbound_limiter.borrowed_tokens:
                await trio.sleep(0.05)


# ---------------------------------------------------------------- silent peers


async def test_bug_and_fix_silent_tcp_peer() -> None:
    """A peer that accepts TCP and never speaks: py-libp2p never gives up on the handshake
    (not even with every ConnectionConfig timeout set); `bound_security_handshake` does."""
    silent = SilentPeer()
    try:
        addr = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{silent.port}")
        someone = ID.from_pubkey(new_identity().public_key)
        async with libp2p_host(plain=True) as plain:
            with trio.move_on_after(4) as still_waiting:
                try:
                    await plain.connect(PeerInfo(someone, [addr]))
                except Exception:
                    pass
            assert still_waiting.cancelled_caught, "plain py-libp2p gave up early: bug fixed upstream?"
        async with libp2p_host(dial_timeout=2.0) as fixed:
            start = time.monotonic()
            with pytest.raises(Exception), trio.fail_after(10):  # noqa: B017
                await fixed.connect(PeerInfo(someone, [addr]))
            assert time.monotonic() - start < 2 + 3
    finally:
        silent.close()


async def test_learn_peer_id_from_an_address_without_p2p() -> None:
    async with libp2p_host() as server, libp2p_host() as client:
        bare = multiaddr.Multiaddr(host_addr(server).split("/p2p/")[0])
        with trio.fail_after(10):
            assert await learn_peer_id(client, bare) == server.get_id()


# ---------------------------------------------------------------- providers


async def test_bug_and_fix_duplicate_providers() -> None:
    """Three servers that each hold the record hand back the same provider three times."""
    key = dht_key(namespace_multihash("dup-test"))
    async with libp2p_host() as s1, libp2p_host() as s2, libp2p_host() as prov, libp2p_host() as asker:
        dhts = {h: KadDHT(h, DHTMode.SERVER) for h in (s1, s2, prov, asker)}
        async with background_trio_service(dhts[s1]), background_trio_service(dhts[s2]), \
                background_trio_service(dhts[prov]), background_trio_service(dhts[asker]):
            for h in (s2, prov, asker):
                await connect(h, s1)
                await dhts[h].add_peer(s1.get_id())
            for h in (prov, asker):
                await connect(h, s2)
                await dhts[h].add_peer(s2.get_id())
            with trio.fail_after(10):
                assert await dhts[prov].provide(key)
            await connect(asker, prov)
            await dhts[asker].add_peer(prov.get_id())
            with trio.fail_after(10):
                raw = await dhts[asker].find_providers(key)
            assert len(raw) > 1 and {p.peer_id for p in raw} == {prov.get_id()}, raw
            merged = dedupe_providers(raw)
            assert [p.peer_id for p in merged] == [prov.get_id()]
            assert merged[0].addrs  # addresses survive the merge


def test_dedupe_providers_merges_addrs() -> None:
    a = ID.from_pubkey(new_identity().public_key)
    b = ID.from_pubkey(new_identity().public_key)
    m1, m2 = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1"), multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/2")
    out = dedupe_providers([PeerInfo(a, [m1]), PeerInfo(b, [m2]), PeerInfo(a, [m1, m2])])
    assert [p.peer_id for p in out] == [a, b]
    assert out[0].addrs == [m1, m2]


# ---------------------------------------------------------------- routing table, EOF, close


async def test_node_adds_its_bootstrap_dht_server_to_the_routing_table() -> None:
    async with kad_server(None) as (server, _):
        cfg = NodeConfig(role="dialer", listen_addr="127.0.0.1", port=0, ephemeral=True,
                         bootstrap=[host_addr(server)])
        node = Node(cfg)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            with trio.fail_after(15):
                await node.bootstrapped.wait()
            assert server.get_id() in node.dht.routing_table.get_peer_ids()
            nursery.cancel_scope.cancel()


async def test_bug_stream_eof_raises_and_read_some_returns_empty() -> None:
    async with libp2p_host() as a, libp2p_host() as b:
        got: list[bytes] = []
        done = trio.Event()

        async def handler(stream) -> None:  # type: ignore[no-untyped-def]
            with pytest.raises(StreamEOF):  # the bug: EOF is an exception, not b""
                while True:
                    got.append(await stream.read(100))
            done.set()

        b.set_stream_handler("/punch/test-eof/1", handler)  # type: ignore[arg-type]
        await connect(a, b)
        with trio.fail_after(10):
            stream = await a.new_stream(b.get_id(), ["/punch/test-eof/1"])  # type: ignore[list-item]
            await stream.write(b"hi")
            await stream.close()
            await done.wait()
        assert b"".join(got) == b"hi"

        async def handler2(stream) -> None:  # type: ignore[no-untyped-def]
            chunks = []
            while chunk := await read_some(stream):
                chunks.append(chunk)
            got2.append(b"".join(chunks))
            done2.set()

        got2: list[bytes] = []
        done2 = trio.Event()
        b.set_stream_handler("/punch/test-eof/2", handler2)  # type: ignore[arg-type]
        with trio.fail_after(10):
            stream = await a.new_stream(b.get_id(), ["/punch/test-eof/2"])  # type: ignore[list-item]
            await stream.write(b"there")
            await stream.close()
            await done2.wait()
        assert got2 == [b"there"]


async def test_bug_leaving_host_run_keeps_listener_open_fix_close() -> None:
    host = build_host(new_identity())
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        port = int(str(host.get_addrs()[0]).split("/tcp/")[1].split("/")[0])
        assert port_accepts(port)
    try:
        assert await trio.to_thread.run_sync(port_accepts, port), "listener closed by run(): fixed upstream?"
    finally:
        with trio.fail_after(5):
            await host.close()
    assert not await trio.to_thread.run_sync(port_accepts, port)


# ---------------------------------------------------------------- dial latency


async def test_bug_and_fix_happy_eyeballs_delay_on_every_dial() -> None:
    """py-libp2p waits 250 ms after starting the last (here: only) dial, even when it
    succeeded at once; Punch sets that delay to 0 (`no_happy_eyeballs_tail_delay`)."""
    from libp2p.network import swarm

    async def connect_time(plain: bool = False) -> float:
        async with libp2p_host(plain=plain) as a, libp2p_host(plain=plain) as b:
            start = time.perf_counter()
            await connect(a, b)
            return time.perf_counter() - start

    fixed = min([await connect_time() for _ in range(3)])
    assert swarm._HAPPY_EYEBALLS_DELAY == 0.0  # build_host applied the fix
    assert fixed < 0.25
    swarm._HAPPY_EYEBALLS_DELAY = 0.25  # py-libp2p's value
    try:
        assert await connect_time(plain=True) >= 0.25  # the bug: a floor of 250 ms per dial
    finally:
        no_happy_eyeballs_tail_delay()


async def test_bug_and_fix_identify_drops_the_agent_version() -> None:
    """py-libp2p's identify parses the peer's agent version and drops it; with
    keep_agent_version (installed by build_host) it lands in the peerstore."""
    from libp2p.identity import update as identify_update
    from libp2p.identity.identify.pb.identify_pb2 import Identify
    from libp2p.peer.peerstore import PeerStore, PeerStoreError

    from punch_net import AGENT_VERSION
    from punch_net.p2p.workarounds import AGENT_KEY

    remote = ID.from_pubkey(new_identity().public_key)
    msg = Identify(agent_version="go-libp2p/0.40.0", protocols=["/ipfs/id/1.0.0"])
    store = PeerStore()
    await identify_update.update_peerstore_from_identify(store, remote, msg)  # the bug
    with pytest.raises(PeerStoreError):
        store.get(remote, AGENT_KEY)

    # The fix, end to end over a real connection: each side learns the other's agent.
    async with libp2p_host() as a, libp2p_host() as b:
        await a.connect(peer_info_of(host_addr(b)))
        with trio.fail_after(10):
            while True:
                try:
                    agent = a.get_peerstore().get(b.get_id(), AGENT_KEY)
                    break
                except Exception:
                    await trio.sleep(0.05)
    assert agent == AGENT_VERSION
