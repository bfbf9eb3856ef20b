"""Command-server backpressure (issue 14 point 3) over in-memory trio streams with real
flow control (`lockstep_stream_pair`: a write waits until the other side reads), so a
client that never reads its replies behaves as it would over yamux."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from punch_net.messaging import codec
from punch_net.messaging.commands import Call, CommandRegistry
from punch_net.messaging.protocol import CommandServer, ServeHooks
from punch_net.rcmgr import Limits, ResourceManager


class FlowStream:
    """The INetStream surface the server uses, over a trio stream with backpressure."""

    def __init__(self, stream: Any, peer: str) -> None:
        self._s = stream
        self.muxed_conn = SimpleNamespace(peer_id=peer)
        self.was_reset = False

    async def read(self, n: int | None = None) -> bytes:
        return bytes(await self._s.receive_some(n))

    async def write(self, data: bytes) -> None:
        await self._s.send_all(data)

    async def close(self) -> None:
        await self._s.send_eof()

    async def reset(self) -> None:
        self.was_reset = True
        await self._s.aclose()


def pair(peer: str) -> tuple[Any, FlowStream]:
    a, b = trio.testing.lockstep_stream_pair()
    return a, FlowStream(b, peer)


def echo_registry() -> CommandRegistry:
    reg = CommandRegistry()

    @reg.command("echo")
    async def echo(call: Call) -> Any:
        return call.request.args

    return reg


def request(i: int, size: int = 0) -> bytes:
    return codec.encode_json({"id": str(i), "command": "echo", "args": {"d": "x" * size}})


async def test_a_peer_that_does_not_read_stops_being_read_and_is_reset() -> None:
    """300 KiB requests pipelined, no reply read: the server reads a bounded number, then
    stops reading (the client's writes block), and resets the stream after the stall limit."""
    rm = ResourceManager(Limits(requests_in_flight_per_peer=2, reply_stall_timeout=0.5))
    served: list[str] = []
    server = CommandServer(echo_registry(), ServeHooks(on_request=lambda peer, req: served.append(req.id)), rcmgr=rm)
    client, server_end = pair("greedy")
    written = 0

    async def pipeline() -> None:
        nonlocal written
        try:
            for i in range(40):
                await client.send_all(request(i, 300 * 1024))
                written += 1
        except trio.BrokenResourceError:
            pass
        except trio.ClosedResourceError:
            pass

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, server_end)
            nursery.start_soon(pipeline)
            while not server_end.was_reset:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert len(served) <= 8, served  # not 40: the server stopped reading
    assert written < 40
    assert rm.usage() == {}  # every reservation given back


async def test_node_wide_memory_limit_answers_busy_at_once() -> None:
    rm = ResourceManager(Limits(request_memory=700 * 1024, request_memory_per_peer=700 * 1024))
    held = trio.Event()
    reg = echo_registry()

    @reg.command("hold")
    async def hold(call: Call) -> Any:
        await held.wait()
        return "ok"

    server = CommandServer(reg, rcmgr=rm)
    greedy, greedy_end = pair("greedy")
    honest, honest_end = pair("honest")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, greedy_end)
            nursery.start_soon(server.handle_stream, honest_end)
            big = codec.encode_json({"id": "g", "command": "hold", "args": {"d": "x" * 300 * 1024}})
            await greedy.send_all(big)  # 2 × 300 KiB reserved: most of the node's 700 KiB
            await trio.testing.wait_all_tasks_blocked()
            await honest.send_all(request(1, 100 * 1024))  # does not fit: busy, not queued
            dec = codec.FrameDecoder()
            replies: list[dict[str, Any]] = []
            while not replies:
                replies += [json.loads(f) for f in dec.feed(bytes(await honest.receive_some(65536)))]
            assert replies[0]["error"]["code"] == codec.BUSY
            assert rm.blocked[("inbound", "system", "memory")] == 1
            await honest.send_all(request(2, 10))  # a small one still fits
            while len(replies) < 2:
                replies += [json.loads(f) for f in dec.feed(bytes(await honest.receive_some(65536)))]
            assert replies[1]["ok"] is True
            held.set()
            nursery.cancel_scope.cancel()
