"""The one place where trio meets Textual, for both ways of running the console.

trio runs in *guest mode* on Textual's asyncio loop (`trio.lowlevel.start_guest_run`):
both event loops share one thread, so a busy node and a key press are scheduled
fairly and nothing needs locks. The bridge owns that run and one `NodeAPI`:

- `LocalBridge` starts a `Runtime` (the node and its role) in that run and uses `rt.api`;
- `AttachBridge` connects a `RemoteNode` to a running node's control socket (trio too),
  and reconnects with backoff when the node goes away (quitting leaves the node running).

Either way the app sees `bridge.api` and runs commands with `await bridge.call(fn, *args)`
(an asyncio result of a trio task). Events (`api.events(replay=True)`: the backlog first)
and `api.snapshot()` every poll interval reach widgets as Textual messages
(`punch_tui.messages`); widgets never see trio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import outcome
import trio
from textual.message import Message
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.api import NodeAPI, NodeError, Snapshot
from punch_net.config import NodeConfig
from punch_net.groups import first_error, only_cancelled
from punch_net.ops.remote import RemoteNode
from punch_tui.messages import AttachStatus, NodeEvents, NodeStarted, NodeStopped, SnapshotReady

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

    from punch_net.runtime import Runtime

T = TypeVar("T")

# The parts the tabs show (not reputation or capabilities: big, and shown nowhere here).
SNAPSHOT_PARTS = ["stats", "listen_addrs", "connections", "routing", "relay", "transfers", "network"]
EVENT_BUFFER = 10_000
EVENT_BATCH = 500
STOP_TIMEOUT = 10.0
RETRY_MIN = 0.5
RETRY_MAX = 5.0
CONNECT_TIMEOUT = 5.0


class Poster(Protocol):
    def post_message(self, message: Message) -> bool: ...


class BridgeError(Exception):
    """The node is not reachable (not started yet, failed, stopped or disconnected)."""


class Disconnected(Exception):
    """Attached: the control connection ended (the node stopped or restarted)."""


def describe_failure(exc: BaseException) -> str:
    """One human line for whatever ended the node (unwraps trio's exception groups)."""
    exc = first_error(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, NodeError) or name in ("ListenError", "IdentityError", "ConfigError", "AddressError"):
        return text or name
    return f"{name}: {text}" if text else name


class NodeBridge:
    """What both modes share: the guest run, `call()`, the event pump and the snapshot poll."""

    attached = False

    def __init__(self, target: Poster, poll_interval: float = 1.0) -> None:
        self.target = target
        self.poll_interval = poll_interval
        self._api: NodeAPI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._done: asyncio.Future[None] | None = None
        self._stopping = False
        self.running = False
        self.failure: str | None = None
        self.reconnects = 0

    @property
    def api(self) -> NodeAPI:
        """The node's API; BridgeError while there is none (starting, stopped, disconnected)."""
        if self._api is None or not self.running:
            raise BridgeError(self.failure or "node is not running")
        return self._api

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

    async def call(self, fn: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run `await fn(*args)` as a task in the node's (trio) world; return or raise its outcome.

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
        """Cancel the run and wait (bounded) until trio has closed everything
        (local: the node stops; attached: only the connection closes)."""
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

    def _on_done(self, result: outcome.Outcome[int | None]) -> None:
        self.running = False
        self._api = None
        error: str | None = None
        code: int | None = None
        try:
            code = result.unwrap()
        except BaseException as exc:
            if not (self._stopping and only_cancelled(exc)):
                error = describe_failure(exc)
        self.failure = error
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if not self._stopping:
            self.target.post_message(NodeStopped(error, code))

    # ------------------------------------------------------------ trio side

    async def _main(self) -> int | None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery  # call() runs commands here, beside the node
            code = await self._serve()
            nursery.cancel_scope.cancel()
        return code

    async def _serve(self) -> int | None:
        """Run until the node ends (local) or forever (attached); the exit code."""
        raise NotImplementedError

    async def _go_live(self, api: NodeAPI) -> None:
        info = await api.info()
        self._api = api
        self.running = True
        self.failure = None
        self.target.post_message(NodeStarted(info.peer_id, list(info.listen_addrs)))

    async def _watch(self, api: NodeAPI) -> None:
        """Pump events and poll snapshots until the event stream ends."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._poll, api)
            await self._pump(api)
            nursery.cancel_scope.cancel()

    async def _pump(self, api: NodeAPI) -> None:
        # A memory channel between the stream and the poster lets one message carry every
        # event that arrived meanwhile (a busy node costs one Textual message, not thousands).
        send, recv = trio.open_memory_channel[ev.Event](EVENT_BUFFER)

        async def post() -> None:
            async for first in recv:
                batch = [first]
                while len(batch) < EVENT_BATCH:
                    try:
                        batch.append(recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                self.target.post_message(NodeEvents(batch))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post)
            async with send, api.events(replay=True) as events:
                async for e in events:
                    try:
                        send.send_nowait(e)
                    except trio.WouldBlock:  # the UI is far behind: drop rather than stall the stream
                        pass

    async def _snapshot(self, api: NodeAPI) -> Snapshot:
        """One snapshot (a seam for the benchmark, which adds synthetic rows)."""
        return await api.snapshot(SNAPSHOT_PARTS)

    async def _poll(self, api: NodeAPI) -> None:
        last_error = ""
        while True:
            started = time.perf_counter()
            try:
                snap = await self._snapshot(api)
            except NodeError as exc:  # a broken snapshot must not stop the node or the console
                if exc.code == "disconnected":  # attached: the node went away; reconnect
                    raise Disconnected(str(exc)) from None
                error = f"snapshot failed: {describe_failure(exc)}"
                if error != last_error:
                    self.target.post_message(NodeEvents([ev.ErrorEvent(message=error, where="tui")]))
                last_error = error
            else:
                last_error = ""
                self.target.post_message(SnapshotReady(snap))
            await trio.sleep(max(0.05, self.poll_interval - (time.perf_counter() - started)))


class LocalBridge(NodeBridge):
    """The console's own node: a Runtime (node + role) in the guest run."""

    def __init__(self, config: NodeConfig, target: Poster, poll_interval: float = 1.0,
                 key_pair: KeyPair | None = None) -> None:
        super().__init__(target, poll_interval)
        self.config = config
        self.key_pair = key_pair
        self.runtime: Runtime | None = None  # for in-process tools (the benchmark); the console uses `api`

    async def _serve(self) -> int | None:
        from punch_net.runtime import Runtime  # here: an attached console need not build a node

        rt = self.runtime = Runtime(self.config, key_pair=self.key_pair)
        code: int | None = None
        ended = trio.Event()

        async def run_node(task_status: TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal code
            try:
                code = await rt.run(task_status=task_status)
            finally:
                ended.set()

        assert self._nursery is not None
        nursery = self._nursery
        await nursery.start(run_node)
        await self._go_live(rt.api)
        nursery.start_soon(self._watch_local, rt.api)
        await ended.wait()
        self.running = False
        await trio.sleep(0.1)  # let the pump deliver the role's last events
        return code

    async def _watch_local(self, api: NodeAPI) -> None:
        try:
            await self._watch(api)
        except Exception as exc:  # no event stream: the node runs on, the console says why
            error = ev.ErrorEvent(message=f"events: {describe_failure(exc)}", where="tui")
            self.target.post_message(NodeEvents([error]))


class AttachBridge(NodeBridge):
    """A running node's control socket; retries with backoff while the node is away
    (`retry=False`: the run ends instead, with the reason as its error)."""

    attached = True

    def __init__(self, path: Path | str, target: Poster, poll_interval: float = 1.0, retry: bool = True) -> None:
        super().__init__(target, poll_interval)
        self.path = Path(path)
        self.retry = retry

    async def _serve(self) -> int | None:
        delay = RETRY_MIN
        while True:
            try:
                remote = await RemoteNode.connect(self.path, timeout=CONNECT_TIMEOUT)
                async with remote:
                    await self._go_live(remote)
                    self.target.post_message(AttachStatus("connected", str(self.path)))
                    delay = RETRY_MIN
                    await self._watch(remote)
                raise Disconnected("the node closed the control socket")
            except Exception as exc:  # refused, reset, node gone, bad data (possibly grouped): retry
                if not self.retry:
                    raise
                self.failure = f"disconnected, retrying ({describe_failure(exc)})"
            self.running = False
            self._api = None
            self.target.post_message(AttachStatus("disconnected, retrying", str(self.path)))
            await trio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            self.reconnects += 1


def _discard(schedule: Callable[[Callable[[], None]], object]) -> Callable[[Callable[[], None]], None]:
    """asyncio's call_soon returns a Handle; trio wants a function returning None."""

    def run(fn: Callable[[], None]) -> None:
        schedule(fn)

    return run
