"""The one place where trio meets Textual.

trio runs in *guest mode* on Textual's asyncio loop (`trio.lowlevel.start_guest_run`):
both event loops share one thread, so a busy node and a key press are scheduled
fairly and nothing needs locks. This class owns that run. Widgets never see trio:
node events and snapshots arrive as Textual messages (`punch_tui.messages`), and UI
commands go in through `call()`, which returns an asyncio result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import trio

from punch_net import events as ev
from punch_net.node import Node
from punch_tui.messages import NodeEvents, NodeStarted, NodeStopped, SnapshotReady
from punch_tui.snapshot import take_snapshot
from punch_tui.traffic import TrafficMeter

T = TypeVar("T")

EVENT_BUFFER = 10_000
EVENT_BATCH = 500
STOP_TIMEOUT = 10.0


class _Poster(Protocol):
    def post_message(self, message: Any) -> bool: ...


class BridgeError(Exception):
    """The node is not running (not started yet, failed or stopped)."""


def describe_failure(exc: BaseException) -> str:
    """One human line for whatever ended the node (unwraps trio's exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if name in ("ListenError", "IdentityError", "ConfigError", "AddressError", "NodeError"):
        return text or name
    return f"{name}: {text}" if text else name


class NodeBridge:
    """Runs `node` (trio) inside the running asyncio loop and connects it to `target`."""

    def __init__(self, node: Node, target: _Poster, poll_interval: float = 1.0) -> None:
        self.node = node
        self.target = target
        self.poll_interval = poll_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._done: asyncio.Future[None] | None = None
        self._stopping = False
        self.running = False
        self.failure: str | None = None
        self.traffic = TrafficMeter()

    # ------------------------------------------------------------ asyncio side

    def start(self) -> None:
        """Start the guest run; call from inside the asyncio loop (e.g. on_mount)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = loop.create_future()
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=_discard(loop.call_soon_threadsafe),
            run_sync_soon_not_threadsafe=_discard(loop.call_soon),
            done_callback=self._on_done,
            host_uses_signal_set_wakeup_fd=True,
            strict_exception_groups=True,
        )

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` as a task in the node's world; return or raise its outcome.

        Cancelling the awaiting asyncio task cancels the trio task too."""
        if self._loop is None or self._token is None or self._nursery is None or not self.running:
            raise BridgeError(self.failure or "node is not running")
        fut: asyncio.Future[T] = self._loop.create_future()
        scope = trio.CancelScope()
        nursery, token = self._nursery, self._token

        async def runner() -> None:
            with scope:
                try:
                    result = await fn(*args)
                except Exception as exc:
                    if not fut.done():
                        fut.set_exception(exc)
                    return
                if not fut.done():
                    fut.set_result(result)
            if not fut.done():  # cancelled on the trio side (node stopping)
                fut.set_exception(BridgeError("node stopped"))

        def schedule() -> None:
            try:
                nursery.start_soon(runner)
            except RuntimeError:
                if not fut.done():
                    fut.set_exception(BridgeError("node is stopping"))

        def on_fut_done(f: asyncio.Future[T]) -> None:
            if f.cancelled():
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass

        fut.add_done_callback(on_fut_done)
        try:
            token.run_sync_soon(schedule)
        except trio.RunFinishedError:
            raise BridgeError("node stopped") from None
        return await fut

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Cancel the node and wait (bounded) until trio has closed the host."""
        self._stopping = True
        if self._token is not None and self._nursery is not None:
            nursery = self._nursery
            try:
                self._token.run_sync_soon(nursery.cancel_scope.cancel)
            except trio.RunFinishedError:
                pass
        if self._done is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
            except TimeoutError:
                pass

    @property
    def finished(self) -> bool:
        return self._done is not None and self._done.done()

    def _on_done(self, outcome: Any) -> None:
        self.running = False
        error: str | None = None
        code: int | None = None
        try:
            code = outcome.unwrap()
        except BaseException as exc:
            if not (self._stopping and _only_cancelled(exc)):
                error = describe_failure(exc)
        self.failure = error
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if not self._stopping:
            self.target.post_message(NodeStopped(error, code))

    # ------------------------------------------------------------ trio side

    async def _main(self) -> int | None:
        self._token = trio.lowlevel.current_trio_token()
        code: int | None = None
        with self.node.bus.subscribe(EVENT_BUFFER) as events:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._pump, events)

                async def run_node(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    nonlocal code
                    code = await self.node.run(task_status=task_status)
                    await trio.sleep(0.1)  # let the pump deliver the last events
                    nursery.cancel_scope.cancel()

                await nursery.start(run_node)
                self.running = True
                self.target.post_message(NodeStarted(str(self.node.peer_id), self.node.listen_addrs()))
                nursery.start_soon(self._poll)
        return code

    async def _pump(self, events: trio.MemoryReceiveChannel[ev.Event]) -> None:
        async for first in events:
            batch = [first]
            while len(batch) < EVENT_BATCH:
                try:
                    batch.append(events.receive_nowait())
                except trio.WouldBlock:
                    break
            self.target.post_message(NodeEvents(batch))

    async def _poll(self) -> None:
        last_error = ""
        while True:
            started = time.perf_counter()
            if self.node.running:
                try:
                    snap = take_snapshot(self.node, self.traffic)
                except Exception as exc:  # a broken snapshot must not stop the node
                    error = f"snapshot failed: {describe_failure(exc)}"
                    if error != last_error:
                        self.target.post_message(NodeEvents([ev.ErrorEvent(message=error, where="tui")]))
                    last_error = error
                else:
                    last_error = ""
                    self.target.post_message(SnapshotReady(snap))
            await trio.sleep(max(0.05, self.poll_interval - (time.perf_counter() - started)))


def _discard(schedule: Callable[[Callable[[], None]], object]) -> Callable[[Callable[[], None]], None]:
    """asyncio's call_soon returns a Handle; trio wants a function returning None."""

    def run(fn: Callable[[], None]) -> None:
        schedule(fn)

    return run


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)
