"""Several circuits through one relay to the same destination (docs/NAT.md, issue 14 point 8).

py-libp2p 0.8.1's hop files every circuit's streams under the *destination* peer id
(`_active_relays[dst]`), so the newest circuit to a peer overwrites the older ones, and when
any circuit to that peer ends, its cleanup closes the streams filed under the key: those of
the newest circuit, another dialer's. Bug first (plain `CircuitV2Protocol`), then the fix
(`PatchedCircuitV2`, punch_net/p2p/patches/relay_hop.py). In-process hosts on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.tools.anyio_service import background_trio_service
from punch_harness import host_addr, libp2p_host, peer_info_of

from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.p2p.patches.relay_hop import PatchedCircuitV2
from punch_net.p2p.streams import read_some
from punch_net.relay import hop
from punch_net.relay.dcutr import is_relayed

quiet_libp2p_logging()
ECHO = TProtocol("/test/echo/1")
LIMITS = RelayLimits(duration=120, data=1 << 20, max_circuit_conns=8, max_reservations=8, reservation_ttl=120)


async def echo(stream: INetStream) -> None:
    try:
        data = await read_some(stream)
        await stream.write(data)
        await stream.close()
    except Exception:
        await stream.reset()


async def round_trip(dialer: IHost, peer: ID, payload: bytes) -> bytes:
    stream = await dialer.new_stream(peer, [ECHO])
    await stream.write(payload)
    got = await read_some(stream)
    await stream.close()
    return got


def relayed(host: IHost, peer: ID) -> list[INetConn]:
    return [c for c in host.get_network().get_connections(peer) if is_relayed(c)]


async def wait_until(cond: object, timeout: float) -> bool:
    """True once `cond()` holds, False if it did not within `timeout`."""
    with trio.move_on_after(timeout):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.05)
        return True
    return False


@asynccontextmanager
async def relayed_pair(cls: type[CircuitV2Protocol], dialers: int, limits: RelayLimits = LIMITS,
                       check: bool = True) -> AsyncIterator[tuple[IHost, list[IHost]]]:
    """A relay running `cls`, a listener reserved on it, and `dialers` hosts each holding
    a relayed connection (an open circuit) to the listener, opened one after the other."""
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(libp2p_host())
        listener = await stack.enter_async_context(libp2p_host())
        await stack.enter_async_context(background_trio_service(cls(relay, limits, allow_hop=True)))
        await stack.enter_async_context(background_trio_service(CircuitV2Protocol(listener, allow_hop=False)))
        listener.set_stream_handler(ECHO, echo)
        with trio.fail_after(30):
            await listener.connect(peer_info_of(host_addr(relay)))
            await hop.reserve(listener, relay.get_id())
        hosts = []
        for _ in range(dialers):
            d = await stack.enter_async_context(libp2p_host())
            with trio.fail_after(30):
                await d.connect(peer_info_of(host_addr(relay)))
                await hop.open_circuit(d, relay.get_id(), listener.get_id())
                if check:
                    assert await round_trip(d, listener.get_id(), b"hello") == b"hello"
            hosts.append(d)
        yield listener, hosts


async def second_circuit_after_first_closes(cls: type[CircuitV2Protocol]) -> str:
    """D1 then D2 reach the listener through the relay; the listener closes its relayed
    connection to D1 (as after a hole punch). What became of D2's relayed connection?"""
    async with relayed_pair(cls, 2) as (listener, (d1, d2)):
        lid = listener.get_id()
        assert relayed(d2, lid)
        with trio.fail_after(10):
            for conn in relayed(listener, d1.get_id()):
                await conn.close()
        # the relay sees the listener's side of D1's circuit end; give its cleanup time to run
        await wait_until(lambda: not relayed(d1, lid) or not relayed(d2, lid), 10)
        await trio.sleep(1.0)
        if not relayed(d2, lid):
            return "closed"
        try:
            with trio.fail_after(10):
                got = await round_trip(d2, lid, b"still there?")
        except Exception as exc:
            return f"round trip failed: {exc!r}"
        return "works" if got == b"still there?" else f"round trip answered {got!r}"


async def test_bug_and_fix_one_circuit_ending_closes_another_dialers_circuit() -> None:
    # bug: the end of D1's circuit closed D2's (both were filed under the listener's id)
    assert await second_circuit_after_first_closes(CircuitV2Protocol) == "closed"
    assert await second_circuit_after_first_closes(PatchedCircuitV2) == "works"


async def test_fix_first_circuit_is_torn_down_on_both_sides() -> None:
    """With the fix, the end of one leg of a circuit closes both of *its* streams: D1 learns
    its relayed connection is gone (on plain py-libp2p its leg stayed open, filed under D1's
    own key with no destination stream)."""
    async with relayed_pair(PatchedCircuitV2, 3) as (listener, (d1, d2, d3)):
        lid = listener.get_id()
        with trio.fail_after(10):
            for conn in relayed(listener, d1.get_id()):
                await conn.close()
        assert await wait_until(lambda: not relayed(d1, lid), 10), "D1's leg was left open"
        with trio.fail_after(20):
            for d in (d2, d3):
                assert await round_trip(d, lid, b"x" * 3000) == b"x" * 3000


async def test_bug_and_fix_a_data_cap_of_zero_means_unlimited() -> None:
    """`--relay-circuit-bytes 0` is "unlimited" (as in the spec); py-libp2p's copy loop then
    checks the destination's reservation, whose cap is 0, and cuts the circuit at its first byte."""
    unlimited = RelayLimits(duration=120, data=0, max_circuit_conns=8, max_reservations=8, reservation_ttl=120)

    async def works(cls: type[CircuitV2Protocol]) -> str:
        try:
            async with relayed_pair(cls, 1, unlimited, check=False) as (listener, (d,)):
                with trio.fail_after(10):
                    got = await round_trip(d, listener.get_id(), b"y" * 5000)
                return "works" if got == b"y" * 5000 else f"answered {len(got)} bytes"
        except Exception as exc:
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]  # type: ignore[assignment]
            return type(exc).__name__

    # bug: the listener's first bytes (its side of the security handshake) end the circuit;
    # D's upgrade fails (SwarmException from SecurityUpgradeFailure, "fail to read from
    # multiselect communicator"); the same set-up works with the fix
    assert await works(CircuitV2Protocol) in ("SwarmException", "SecurityUpgradeFailure")
    assert await works(PatchedCircuitV2) == "works"


async def test_bug_and_fix_the_duration_cap_ends_an_idle_circuit() -> None:
    """The relay's duration cap ends a circuit even when nothing is sent; py-libp2p checked
    it only after a read returned, so an idle circuit outlived its cap."""
    short = RelayLimits(duration=3, data=1 << 20, max_circuit_conns=8, max_reservations=8, reservation_ttl=120)

    async def ended_within(cls: type[CircuitV2Protocol], seconds: float) -> bool:
        async with relayed_pair(cls, 1, short) as (listener, (d,)):
            return await wait_until(lambda: not relayed(d, listener.get_id()), seconds)

    assert not await ended_within(CircuitV2Protocol, 6), "bug: idle circuit still open after twice its cap"
    assert await ended_within(PatchedCircuitV2, 10)
