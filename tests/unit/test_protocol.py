"""The `/punch/cmd/1.0.0` trio adapter (CommandServer, CommandSession, FrameWriter) over
in-memory trio streams standing in for a libp2p stream: the same code paths, no sockets."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from punch_net.messaging import codec
from punch_net.messaging.commands import Call, CommandError, CommandRegistry
from punch_net.messaging.protocol import CommandServer, CommandSession, FrameWriter, ServeHooks, SessionClosed


class FakeStream:
    """Just the INetStream surface the adapter uses."""

    def __init__(self, stream: trio.testing.MemorySendStream | Any) -> None:
        self._s = stream
        self.muxed_conn = SimpleNamespace(peer_id="peer-x")
        self.writes = 0
        self.was_reset = False

    async def read(self, n: int | None = None) -> bytes:
        return await self._s.receive_some(n)

    async def write(self, data: bytes) -> None:
        self.writes += 1
        await self._s.send_all(data)

    async def close(self) -> None:
        await self._s.send_eof()

    async def reset(self) -> None:
        self.was_reset = True
        await self._s.aclose()


def registry() -> CommandRegistry:
    reg = CommandRegistry()

    @reg.command("echo")
    async def echo(call: Call) -> Any:
        return call.request.args

    @reg.command("slow")
    async def slow(call: Call) -> Any:
        await trio.sleep(call.request.args["s"])
        return "done"

    @reg.command("fail")
    async def fail(call: Call) -> Any:
        raise CommandError("nope", "as asked")

    @reg.command("crash")
    async def crash(call: Call) -> Any:
        raise RuntimeError("bug in handler")

    return reg


def pair() -> tuple[FakeStream, FakeStream]:
    a, b = trio.testing.memory_stream_pair()
    return FakeStream(a), FakeStream(b)


async def read_all(stream: FakeStream) -> list[dict[str, Any]]:
    dec = codec.FrameDecoder()
    out: list[dict[str, Any]] = []
    while data := await stream.read(65536):
        out += [json.loads(f) for f in dec.feed(data)]
    return out


async def test_server_answers_everything_before_closing_on_eof() -> None:
    client, server_end = pair()
    seen: list[str] = []
    server = CommandServer(registry(), ServeHooks(on_request=lambda peer, req: seen.append(req.command)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_end)
        await client.write(codec.encode_json({"id": "1", "command": "slow", "args": {"s": 0.2}}))
        await client.write(codec.encode_json({"id": "2", "command": "echo", "args": {"a": 1}}))
        await client.write(codec.encode_json({"id": "3", "command": "fail"}))
        await client.write(codec.encode_json({"id": "4", "command": "crash"}))
        await client.close()  # half-close: answers must still come
        with trio.fail_after(5):
            got = {r["id"]: r for r in await read_all(client)}
    assert got["1"]["result"] == "done" and got["2"]["result"] == {"a": 1}
    assert got["3"]["error"] == {"code": "nope", "message": "as asked"}
    assert got["4"]["error"]["code"] == "handler_error" and "bug in handler" in got["4"]["error"]["message"]
    assert sorted(seen) == ["crash", "echo", "fail", "slow"]


async def test_server_handler_timeout_and_oversize_result() -> None:
    client, server_end = pair()
    reg = registry()

    @reg.command("huge")
    async def huge(call: Call) -> Any:
        return "x" * 2000

    server = CommandServer(reg, handler_timeout=0.2, max_frame=1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_end)
        await client.write(codec.encode_json({"id": "1", "command": "slow", "args": {"s": 5}}))
        await client.write(codec.encode_json({"id": "2", "command": "huge"}))
        await client.close()
        with trio.fail_after(5):
            got = {r["id"]: r for r in await read_all(client)}
    assert got["1"]["error"]["code"] == "timeout"
    assert got["2"]["error"]["code"] == "too_large"


async def test_server_resets_on_framing_error() -> None:
    client, server_end = pair()
    rejected: list[str] = []
    server = CommandServer(registry(), ServeHooks(on_rejected=lambda peer, why: rejected.append(why)),
                           max_frame=100)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, server_end)
            await client.write(codec.encode_uvarint(101))
    assert server_end.was_reset and rejected and "exceeds" in rejected[0]


async def test_session_pipelines_and_batches_writes() -> None:
    client_end, server_end = pair()
    server = CommandServer(registry())
    session = CommandSession(client_end, sender="me-123456")
    results: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_end)
        nursery.start_soon(session.run_reader)

        async def one(i: int) -> None:
            resp, rtt = await session.request("echo", {"i": i}, timeout=5)
            assert resp.ok and rtt >= 0
            results[i] = resp.result["i"]

        async with trio.open_nursery() as reqs:
            for i in range(64):
                reqs.start_soon(one, i)
        resp, _ = await session.request("nope", timeout=5)
        assert not resp.ok and resp.error_code == "unknown_command"
        await client_end.close()
        with trio.fail_after(5):
            while not session.closed:
                await trio.sleep(0.01)
        with pytest.raises(SessionClosed):
            await session.request("echo", timeout=5)
    assert results == {i: i for i in range(64)}
    assert client_end.writes < 64  # requests queued together left in fewer writes
    assert server_end.writes < 65


async def test_session_fails_waiting_requests_when_the_peer_goes() -> None:
    client_end, server_end = pair()
    session = CommandSession(client_end, sender="me")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run_reader)

        async def peer_hangs_up() -> None:
            await server_end.read(65536)  # the request arrives, is never answered
            await server_end.close()

        nursery.start_soon(peer_hangs_up)
        with trio.fail_after(5), pytest.raises(SessionClosed, match="closed by peer"):
            await session.request("echo", timeout=10)


async def test_session_request_timeout() -> None:
    client_end, _server_end = pair()
    session = CommandSession(client_end, sender="me")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run_reader)
        with pytest.raises(trio.TooSlowError):
            await session.request("echo", timeout=0.2)
        assert not session._pending
        nursery.cancel_scope.cancel()


async def test_session_timer_fails_each_request_at_its_own_deadline() -> None:
    """With the session running, requests keep no cancel scope each: the session's timer
    fails them; an earlier deadline than the one it sleeps until must wake it."""
    client_end, _server_end = pair()  # a peer that never answers
    session = CommandSession(client_end, sender="me")
    took: dict[float, float] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run_reader)
        with trio.fail_after(5):
            while not session._timer_running:
                await trio.sleep(0.001)

        async def one(timeout: float) -> None:
            start = trio.current_time()
            with pytest.raises(trio.TooSlowError):
                await session.request("echo", timeout=timeout)
            took[timeout] = trio.current_time() - start

        with trio.fail_after(5):
            async with trio.open_nursery() as reqs:
                reqs.start_soon(one, 1.0)
                await trio.sleep(0.05)
                reqs.start_soon(one, 0.2)  # earlier than the timer's current deadline
        assert 0.2 <= took[0.2] < 0.6 and 1.0 <= took[1.0] < 1.6
        assert not session._pending
        nursery.cancel_scope.cancel()


async def test_session_deadlines_do_not_pile_up() -> None:
    client_end, server_end = pair()
    session = CommandSession(client_end, sender="me")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(CommandServer(registry()).handle_stream, server_end)
        nursery.start_soon(session.run_reader)
        with trio.fail_after(5):
            while not session._timer_running:
                await trio.sleep(0.001)
        with trio.fail_after(30):
            for _ in range(3000):
                resp, _ = await session.request("echo", {}, timeout=60)
                assert resp.ok
        assert len(session._deadlines) <= 1025  # answered requests' entries are dropped
        nursery.cancel_scope.cancel()


async def test_frame_writer_backpressure_and_close() -> None:
    a, b = pair()
    writer = FrameWriter(a, max_buffer=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for i in range(20):
            await writer.send(b"frame-%02d|" % i)  # waits whenever 10 bytes are queued
        writer.close()
    await a.close()
    data = b"".join([chunk async for chunk in _chunks(b)])
    assert data == b"".join(b"frame-%02d|" % i for i in range(20))
    assert writer.closed
    with pytest.raises(trio.ClosedResourceError):
        await writer.send(b"late")


async def _chunks(stream: FakeStream) -> Any:
    while chunk := await stream.read(65536):
        yield chunk
