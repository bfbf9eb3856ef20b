"""punch_net/p2p/patches/multiselect_one_flight.py: a stream's protocol is agreed in one
round trip, not two. Bug then fix, between two real hosts whose connection runs through
tests/support/delay_proxy.py (each byte DELAY late each way: this kernel has no netem), so
a round trip is 2 × DELAY and the negotiation's time counts them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
from delay_proxy import delay_proxy
from libp2p.abc import IHost, IMultiselectCommunicator, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.peer.peerinfo import PeerInfo
from libp2p.protocol_muxer.multiselect_client import MultiselectClient
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from multiaddr import Multiaddr
from punch_harness import host_addr, libp2p_host

from punch_net.p2p.patches import multiselect_one_flight
from punch_net.p2p.streams import open_with

DELAY = 0.3
RTT = 2 * DELAY
PROTO = TProtocol("/punch/test-one-flight/1")
MISSING = TProtocol("/punch/test-nobody-speaks-this/1")
ECHO = TProtocol("/punch/test-echo-first/1")
Select = Callable[[MultiselectClient, Sequence[TProtocol], IMultiselectCommunicator], Awaitable[TProtocol]]


async def close_it(stream: INetStream) -> None:
    await stream.close()


async def echo_first(stream: INetStream) -> None:
    with trio.fail_after(30):
        await stream.write(await stream.read(100))
    await stream.close()


@asynccontextmanager
async def delayed_pair() -> AsyncIterator[tuple[IHost, IHost]]:
    """Host a connected to host b through the delay proxy; b serves PROTO."""
    async with libp2p_host() as a, libp2p_host() as b:
        b.set_stream_handler(PROTO, close_it)
        b.set_stream_handler(ECHO, echo_first)
        port = int(host_addr(b).split("/tcp/")[1].split("/")[0])
        async with delay_proxy(port, DELAY) as proxy_port:
            with trio.fail_after(60):
                await a.connect(PeerInfo(b.get_id(), [Multiaddr(f"/ip4/127.0.0.1/tcp/{proxy_port}")]))
            yield a, b


async def round_trips(a: IHost, b: IHost, select: Select) -> float:
    """`select` agreeing PROTO on a fresh stream of the a-b connection, in round trips."""
    muxed = a.get_network().get_connections(b.get_id())[0].muxed_conn
    stream = await muxed.open_stream()
    started = trio.current_time()
    with trio.fail_after(30):
        got = await select(MultiselectClient(), [PROTO], MultiselectCommunicator(stream))
    elapsed = trio.current_time() - started
    assert got == PROTO
    await stream.reset()
    return elapsed / RTT


async def test_bug_and_fix_a_stream_protocol_in_one_round_trip() -> None:
    async with delayed_pair() as (a, b):
        assert MultiselectClient.select_one_of is not multiselect_one_flight.ORIGINAL_SELECT_ONE_OF
        bug = await round_trips(a, b, multiselect_one_flight.ORIGINAL_SELECT_ONE_OF)
        fix = await round_trips(a, b, MultiselectClient.select_one_of)
        started = trio.current_time()
        with trio.fail_after(30):
            stream = await a.new_stream(b.get_id(), [PROTO])  # the way every caller opens one
        host_path = (trio.current_time() - started) / RTT
        await stream.reset()
    # py-libp2p: the header, its echo, then the protocol and its answer
    assert bug >= 1.9, f"bug: two round trips expected, measured {bug:.2f}"
    assert fix < 1.5 and host_path < 1.5, f"fix: one round trip expected, measured {fix:.2f} / {host_path:.2f}"


async def test_a_refused_first_protocol_falls_back_to_the_next() -> None:
    async with libp2p_host() as a, libp2p_host() as b:
        b.set_stream_handler(PROTO, close_it)
        with trio.fail_after(60):
            await a.connect(PeerInfo(b.get_id(), [Multiaddr(host_addr(b))]))
            stream = await a.new_stream(b.get_id(), [MISSING, PROTO])
            assert stream.get_protocol() == PROTO
            await stream.reset()
            with pytest.raises(StreamFailure) as refused:
                await a.new_stream(b.get_id(), [MISSING])
            assert "not supported" in str(refused.value.__cause__), refused.value.__cause__


async def test_open_with_sends_the_first_message_with_the_protocol() -> None:
    """punch_net.p2p.streams.open_with (the torrent client's streams): a request's answer one
    round trip after opening, where new_stream then write take two."""
    async with delayed_pair() as (a, b):
        with trio.fail_after(30):
            started = trio.current_time()
            stream = await a.new_stream(b.get_id(), [ECHO])
            await stream.write(b"hello")
            plain = await stream.read(100), (trio.current_time() - started) / RTT
            started = trio.current_time()
            stream = await open_with(a, b.get_id(), ECHO, b"hello")
            assert stream.get_protocol() == ECHO
            lazy = await stream.read(100), (trio.current_time() - started) / RTT
            with pytest.raises(StreamFailure, match="refused"):
                await open_with(a, b.get_id(), MISSING, b"hello")
    assert plain[0] == lazy[0] == b"hello"
    assert plain[1] >= 1.9, f"new_stream + write: two round trips expected, measured {plain[1]:.2f}"
    assert lazy[1] < 1.5, f"open_with: one round trip expected, measured {lazy[1]:.2f}"
