"""Trio adapter for `/punch/cmd/1.0.0`: serve requests on inbound streams and keep one
pipelined client session per peer for outbound requests."""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import INetStream

from punch_net.messaging import codec
from punch_net.messaging.commands import Call, CommandError, CommandRegistry
from punch_net.p2p.streams import read_some, reset_quietly
from punch_net.rcmgr import Refusal, Reservation, ResourceManager

IDLE_TIMEOUT = 120.0  # an inbound stream with no request for this long is closed
HANDLER_TIMEOUT = 30.0  # one handler may run this long
MAX_IN_FLIGHT = 64  # concurrent requests served per stream
MAX_WRITE_BUFFER = 2 * 1024 * 1024  # bytes queued for one stream before senders wait
SERVE_WRITE_BUFFER = 512 * 1024  # the server's replies queued per stream (a non-reading peer holds it)
REPLY_OVERHEAD = 256  # bytes counted per request beyond twice its frame (ids, JSON envelope)


class FrameWriter:
    """Coalesces frames queued by many tasks into one `stream.write`.

    Every write through py-libp2p costs a yamux frame, a Noise message and a syscall,
    each a pile of Python. With 32 requests in flight, frames queued in the same
    scheduler pass leave together (one write instead of 32); alone, a frame costs one
    extra task switch. `run()` is the only task that writes to the stream.
    """

    def __init__(self, stream: INetStream, max_buffer: int = MAX_WRITE_BUFFER) -> None:
        self.stream = stream
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._wakeup = trio.Event()
        self._drained = trio.Event()
        self._written = trio.Event()
        self.writing = 0  # bytes of the write in progress
        self._closing = False
        self.closed = False

    @property
    def pending(self) -> int:
        """Bytes queued or being written (a peer that does not read keeps them here)."""
        return len(self._buf) + self.writing

    async def wait_room(self, limit: int) -> None:
        """Wait until fewer than `limit` bytes are pending (or the writer has ended)."""
        while self.pending >= limit and not self.closed:
            await self._written.wait()

    def close(self) -> None:
        """Let `run()` return once everything queued so far is written."""
        self._closing = True
        self._wakeup.set()

    def try_send(self, frame: bytes) -> bool:
        """Queue a frame if `send` would not wait (no cancel scope needed); else False."""
        if len(self._buf) >= self.max_buffer or self.closed:
            return False
        self._buf += frame
        self._wakeup.set()
        return True

    async def send(self, frame: bytes) -> None:
        """Queue a frame; waits only while `max_buffer` bytes are already queued."""
        while len(self._buf) >= self.max_buffer and not self.closed:
            await self._drained.wait()
        if self.closed:
            raise trio.ClosedResourceError("stream writer closed")
        self._buf += frame
        self._wakeup.set()

    async def run(self) -> None:
        """Write queued frames until `close()` (after a last flush), cancellation, or a
        failed write (which propagates)."""
        try:
            while True:
                if not self._buf:
                    if self._closing:
                        return
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    continue
                data = bytes(self._buf)
                self._buf.clear()
                drained, self._drained = self._drained, trio.Event()
                drained.set()
                self.writing = len(data)
                await self.stream.write(data)
                del data
                self.writing = 0
                written, self._written = self._written, trio.Event()
                written.set()
        finally:
            self.closed = True
            self._drained.set()
            self._written.set()


@dataclass
class ServeHooks:
    """Callbacks the node uses to publish events about served requests."""

    on_request: Callable[[str, codec.Request], None] = lambda peer, req: None
    on_rejected: Callable[[str, str], None] = lambda peer, reason: None


class CommandServer:
    def __init__(
        self,
        registry: CommandRegistry,
        hooks: ServeHooks | None = None,
        max_frame: int = codec.MAX_FRAME,
        handler_timeout: float = HANDLER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        rcmgr: ResourceManager | None = None,
    ) -> None:
        self.registry = registry
        self.hooks = hooks or ServeHooks()
        self.max_frame = max_frame
        self.handler_timeout = handler_timeout
        self.idle_timeout = idle_timeout
        # Backpressure: every request holds a reservation (count and bytes, per peer and
        # node-wide) from the moment it is read until its reply is queued.
        self.rcmgr = rcmgr or ResourceManager()
        self._freed = trio.Event()
        self._waiting = 0  # streams waiting in `_admit` (no one waiting: a release costs nothing)
        self.rcmgr.on_release(self._wake)

    def _wake(self) -> None:
        if self._waiting:
            self._freed.set()
            self._freed = trio.Event()

    async def _admit(self, peer: str, frame: bytes) -> Reservation | Refusal:
        """A reservation for one request: over the peer's share, wait (the stream is not
        read meanwhile, so the peer's yamux window closes); over the node's, refuse."""
        size = 2 * len(frame) + REPLY_OVERHEAD
        while True:
            outcome = self.rcmgr.reserve_request(peer, size)
            if isinstance(outcome, Reservation) or outcome.scope != "peer":
                return outcome
            self._waiting += 1
            try:
                await self._freed.wait()
            finally:
                self._waiting -= 1

    async def handle_stream(self, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        decoder = codec.FrameDecoder(self.max_frame)
        writer = FrameWriter(stream, SERVE_WRITE_BUFFER)
        stall = self.rcmgr.limits.reply_stall_timeout

        async def respond(resp: codec.Response) -> None:
            try:
                frame = codec.encode_json(resp.to_json(), self.max_frame)
            except ValueError:
                frame = codec.encode_json(
                    codec.Response.failure(resp.id, codec.TOO_LARGE, "result too large").to_json()
                )
            if writer.try_send(frame):
                return  # room in the buffer: no wait, so no deadline to set up (the common case)
            with trio.fail_after(stall):  # a peer that does not read its replies loses the stream
                await writer.send(frame)

        async def serve_one(frame: bytes, reservation: Reservation, done: trio.CancelScope) -> None:
            try:
                resp = await self._answer(peer, frame)
                del frame  # the request's bytes are not needed while the reply waits
                await respond(resp)
            except Exception:
                done.cancel()
                await reset_quietly(stream)
            finally:
                reservation.release()

        async def refuse(frame: bytes, refusal: Refusal) -> None:
            try:
                req_id = str(codec.parse_request(frame).id)
            except codec.BadMessage as exc:
                req_id = str(exc.req_id)
            self.hooks.on_rejected(peer, f"busy: node-wide {refusal.resource} limit")
            try:
                await respond(codec.Response.failure(req_id, codec.BUSY, "node busy, retry later"))
            except trio.TooSlowError:
                pass  # the reply stalled: the reading loop's own stall deadline ends the stream

        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(writer.run)
                async with trio.open_nursery() as nursery:  # one task per admitted request
                    while True:
                        with trio.move_on_after(self.idle_timeout) as idle:
                            data = await read_some(stream)
                        if idle.cancelled_caught or not data:
                            break
                        try:
                            frames = decoder.feed(data)
                        except codec.ProtocolError as exc:
                            self.hooks.on_rejected(peer, str(exc))
                            outer.cancel_scope.cancel()
                            await reset_quietly(stream)
                            return
                        del data
                        while frames:
                            frame = frames.pop(0)
                            # Replies this peer has not taken yet: read no more until they leave
                            # (the deadline only when there is a wait: it costs per request).
                            if writer.pending >= SERVE_WRITE_BUFFER:
                                with trio.fail_after(stall):
                                    await writer.wait_room(SERVE_WRITE_BUFFER)
                            admitted = self.rcmgr.reserve_request(peer, 2 * len(frame) + REPLY_OVERHEAD)
                            if isinstance(admitted, Refusal) and admitted.scope == "peer":
                                admitted = await self._admit(peer, frame)  # wait for the peer's share
                            if isinstance(admitted, Reservation):
                                nursery.start_soon(serve_one, frame, admitted, outer.cancel_scope)
                            else:
                                nursery.start_soon(refuse, frame, admitted)
                            del frame
                writer.close()  # every request answered: flush, then stop the writer
            await stream.close()
        except Exception:
            await reset_quietly(stream)

    async def _answer(self, peer: str, frame: bytes) -> codec.Response:
        try:
            req = codec.parse_request(frame)
        except codec.BadMessage as exc:
            self.hooks.on_rejected(peer, str(exc))
            return codec.Response.failure(exc.req_id, exc.code, str(exc))
        self.hooks.on_request(peer, req)
        handler = self.registry.get(req.command)
        if handler is None:
            return codec.Response.failure(
                req.id, codec.UNKNOWN_COMMAND, f"unknown command {req.command!r}"
            )
        try:
            # a bare CancelScope, not fail_after (a generator context manager): once per request
            with trio.CancelScope(deadline=trio.current_time() + self.handler_timeout) as deadline:
                result = await handler(Call(peer, req))
            if deadline.cancelled_caught:
                raise trio.TooSlowError
        except CommandError as exc:
            return codec.Response.failure(req.id, exc.code, str(exc))
        except trio.TooSlowError:
            return codec.Response.failure(req.id, codec.TIMEOUT, "handler timed out")
        except Exception as exc:
            return codec.Response.failure(req.id, codec.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
        return codec.Response(req.id, True, result)


class SessionClosed(Exception):
    """The command stream to the peer ended; requests on it cannot be answered."""


class _Pending:
    """One request waiting for its response (a plain class: one per request)."""

    __slots__ = ("event", "response", "timed_out")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response: codec.Response | None = None
        self.timed_out = False  # set by the session's timer (`_expire_loop`)


class CommandSession:
    """One outbound stream to a peer carrying many concurrent requests, matched by id."""

    _ids = itertools.count(1)

    def __init__(self, stream: INetStream, sender: str, max_frame: int = codec.MAX_FRAME) -> None:
        self.stream = stream
        self.sender = sender
        self.max_frame = max_frame
        self._pending: dict[str, _Pending] = {}
        self._writer = FrameWriter(stream)
        self.closed = False
        self.close_reason = ""
        # Request deadlines kept here, not one cancel scope each (a scope with a deadline
        # costs ~3 µs a request in trio): a heap of (deadline, seq, pending) that
        # `_expire_loop` (run by `run_reader`) wakes at its deadline.
        self._deadlines: list[tuple[float, int, _Pending]] = []
        self._deadline_seq = itertools.count()
        self._timer_wake = trio.Event()
        self._timer_running = False

    def next_id(self) -> str:
        return f"{self.sender[-6:]}-{next(self._ids)}"

    async def run_reader(self) -> None:
        """Write queued requests and dispatch responses until the stream ends; then fail
        every waiting request. (The name predates the writer task it now also runs.)"""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, nursery.cancel_scope)
                nursery.start_soon(self._expire_loop)
                await self._read_loop()
                nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            self._timer_running = False
            for pending in self._pending.values():
                pending.event.set()

    async def _expire_loop(self) -> None:
        """Fail each waiting request at its deadline (see `request`)."""
        self._timer_running = True
        try:
            while True:
                heap, now = self._deadlines, trio.current_time()
                while heap and heap[0][0] <= now:
                    pending = heapq.heappop(heap)[2]
                    if not pending.event.is_set():
                        pending.timed_out = True
                        pending.event.set()
                self._timer_wake = trio.Event()
                with trio.move_on_at(heap[0][0] if heap else math.inf):
                    await self._timer_wake.wait()
        finally:
            self._timer_running = False

    async def _write_loop(self, done: trio.CancelScope) -> None:
        try:
            await self._writer.run()
        except Exception as exc:
            self.close_reason = f"stream failed: {exc or type(exc).__name__}"
            self.closed = True
            done.cancel()

    async def _read_loop(self) -> None:
        decoder = codec.FrameDecoder(self.max_frame)
        try:
            while True:
                data = await read_some(self.stream)
                if not data:
                    self.close_reason = "stream closed by peer"
                    break
                for frame in decoder.feed(data):
                    try:
                        resp = codec.parse_response(frame)
                    except codec.BadMessage:
                        continue
                    pending = self._pending.get(resp.id)
                    if pending is not None:
                        pending.response = resp
                        pending.event.set()
        except codec.ProtocolError as exc:
            self.close_reason = f"protocol error: {exc}"
            await reset_quietly(self.stream)
        except Exception as exc:
            self.close_reason = f"stream failed: {exc or type(exc).__name__}"

    async def request(
        self, command: str, args: dict[str, Any] | None = None, timeout: float = 10.0,
        req_id: str | None = None,
    ) -> tuple[codec.Response, float]:
        """Send one request and wait for its response; returns (response, rtt seconds)."""
        if self.closed:
            raise SessionClosed(self.close_reason or "session closed")
        req_id = req_id or self.next_id()
        # codec.Request(...).to_json() without the object (one per request)
        frame = codec.encode_json({"id": req_id, "command": command, "args": args or {}, "from": self.sender},
                                  self.max_frame)
        pending = _Pending()
        self._pending[req_id] = pending
        start = time.perf_counter()
        try:
            if timeout > 0 and self._timer_running and self._writer.try_send(frame):
                # queued without a wait: the session's timer fails it at its deadline
                self._add_deadline(trio.current_time() + timeout, pending)
                await pending.event.wait()
                if pending.timed_out:
                    raise trio.TooSlowError
            else:  # the writer's buffer is full (or no timer): one cancel scope covers it all
                with trio.CancelScope(deadline=trio.current_time() + timeout if timeout > 0 else math.inf) as scope:
                    try:
                        await self._writer.send(frame)
                    except trio.ClosedResourceError:
                        raise SessionClosed(self.close_reason or "session closed") from None
                    await pending.event.wait()
                if scope.cancelled_caught:
                    raise trio.TooSlowError
        finally:
            del self._pending[req_id]
            if not pending.event.is_set():
                pending.event.set()  # (cancelled by the caller) its deadline entry may be dropped
        if pending.response is None:
            raise SessionClosed(self.close_reason or "session closed")
        return pending.response, time.perf_counter() - start

    def _add_deadline(self, deadline: float, pending: _Pending) -> None:
        heap = self._deadlines
        if len(heap) > 2 * len(self._pending) + 1024:
            # answered requests' entries, dropped in a batch (the heap stays ~ requests in flight)
            heap[:] = [entry for entry in heap if not entry[2].event.is_set()]
            heapq.heapify(heap)
        if not heap or deadline < heap[0][0]:
            self._timer_wake.set()  # earlier than what the timer sleeps until
        heapq.heappush(heap, (deadline, next(self._deadline_seq), pending))

    async def aclose(self) -> None:
        self.closed = True
        try:
            await self.stream.close()
        except Exception:
            pass
