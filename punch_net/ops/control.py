"""The control socket: a running node's console port for local fronts (`punch-tui
--attach`, the web view, scripts, `punch_net.ops.remote.RemoteNode`).

A Unix stream socket in the node's data dir (`control.sock`, or `control-<pid>.sock` when
another live node already holds that name), mode 0600, peers checked with SO_PEERCRED
(same user or root). The protocol is JSON lines, documented in docs/OPERATIONS.md
("Control socket"):

    node -> client, first line:  {"type": "hello", "protocol": "punch-control/2", "peer_id": ..., ...}
    client -> node:              {"id": 1, "op": "snapshot", "args": {"parts": ["stats"]}}
    node -> client:              {"type": "reply", "id": 1, "ok": true, "result": {...}}
                                 {"type": "reply", "id": 1, "ok": false, "error": {"code": ..., "message": ...}}
    after op "subscribe":        {"type": "event", "event": {"event": "connected", ...}}
                                 {"type": "dropped", "count": N}   (events lost: client too slow)

The ops are the methods of `punch_net.api.NodeAPI` (`API_METHODS`): args are the
method's keyword arguments, the result its return value, both in the wire form
`punch_net.ops.wire` derives from the signatures; the server holds a NodeAPI and nothing
of the node itself. Requests run concurrently; replies carry the request's id. A line over
1 MiB, bad JSON or an unknown op gets an error reply and the connection stays usable.

The same protocol runs over any byte stream: `serve_stream(api, stream)` serves one
connection (the socket server calls it per client; `punch testnet` over each child's
stdin/stdout), and `ControlClient.from_stream` is its client side.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import trio
from trio_typing import TaskStatus

from punch_net import __version__
from punch_net import events as ev
from punch_net.api import API_METHODS, NodeAPI, NodeError
from punch_net.errors import ControlError

# `punch_net.ops.wire` (cattrs, ~6 ms of CPU) is imported by the methods that use it: a node
# whose socket no client ever connects to (a benchmark's, a script's) does not load it.

__all__ = [
    "EVENT_BUFFER",
    "MAX_CLIENTS",
    "MAX_INFLIGHT",
    "MAX_LINE",
    "PROTOCOL",
    "SEND_TIMEOUT",
    "ControlClient",
    "ControlError",
    "LineBuffer",
    "choose_socket_path",
    "default_socket_path",
    "encode",
    "find_sockets",
    "hello_problem",
    "parse_request",
    "serve",
    "serve_stream",
    "socket_alive",
    "sweep_stale",
]

T = TypeVar("T")

PROTOCOL = "punch-control/2"  # /2: the ops are the NodeAPI methods (/1 had send, torrent.*, network)
SOCKET_NAME = "control.sock"
MAX_LINE = 1 << 20
MAX_CLIENTS = 32
MAX_INFLIGHT = 16  # concurrent requests per client
SEND_TIMEOUT = 10.0  # a client that reads nothing for this long is dropped
EVENT_BUFFER = 5000
MAX_UNIX_PATH = 107
HELLO_TIMEOUT = 5.0  # the hello waits this long for api.info(); then it goes without

# Ops of the control layer itself; every other op is an API method.
STREAM_OPS = ("subscribe", "unsubscribe", "ops")

Publish = Callable[[ev.Event], None]


# ---------------------------------------------------------------- paths


def default_socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def socket_alive(path: Path, timeout: float = 1.0) -> bool:
    """Does a process accept connections on this Unix socket right now?"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def choose_socket_path(data_dir: Path, wanted: Path | None = None) -> Path:
    """`wanted` if given; else `control.sock`, or `control-<pid>.sock` if a live node owns it."""
    if wanted is not None:
        return wanted
    sweep_stale(data_dir)
    path = default_socket_path(data_dir)
    if path.exists() and socket_alive(path):
        return data_dir / f"control-{os.getpid()}.sock"
    return path


def sweep_stale(data_dir: Path) -> None:
    """Remove `control-<pid>.sock` files left by killed nodes.

    Judged by the pid in the name, not by connecting: a node that has bound its socket
    but not yet called listen() refuses connections, and must not lose its file."""
    for path in data_dir.glob("control-*.sock"):
        pid_text = path.stem.removeprefix("control-")
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue
        if not socket_alive(path, timeout=0.2):
            with contextlib.suppress(OSError):
                path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_sockets(data_dir: Path) -> list[Path]:
    """Live control sockets in a data dir (for `punch-tui --attach` without a path)."""
    if not data_dir.is_dir():
        return []
    found = sorted(data_dir.glob("control*.sock"))
    return [p for p in found if socket_alive(p)]


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# ---------------------------------------------------------------- pure protocol helpers


def parse_request(line: bytes) -> tuple[object, str, dict[str, object]]:
    """(id, op, args) from one request line; raises ControlError("bad_request", ...)."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError("bad_request", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ControlError("bad_request", "a request is a JSON object")
    op = obj.get("op")
    if not isinstance(op, str) or not op:
        raise ControlError("bad_request", "missing 'op'")
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ControlError("bad_request", "'args' must be an object")
    return obj.get("id"), op, args


def encode(obj: Mapping[str, object]) -> bytes:
    return (json.dumps(obj, default=_json_default, separators=(",", ":")) + "\n").encode()


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def hello_problem(hello: object) -> str:
    """Why a first line is not a hello we can talk to ("" when it is)."""
    if not isinstance(hello, dict) or not str(hello.get("protocol", "")).startswith("punch-control/"):
        return "not a Punch control socket"
    if hello["protocol"] != PROTOCOL:
        return (f"the node speaks {hello['protocol']}, this program {PROTOCOL}: "
                f"run the same Punch version on both sides")
    return ""


class LineBuffer:
    """Splits a byte stream into lines; refuses (skips) lines longer than `limit`."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.skipping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        """Complete lines in order; None stands for a line that was too long."""
        out: list[bytes | None] = []
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > self.limit:
                    if not self.skipping:
                        out.append(None)
                    self.skipping = True
                    self.buf.clear()
                return out
            line = bytes(self.buf[:nl])
            del self.buf[: nl + 1]
            if self.skipping:
                self.skipping = False
                continue
            if len(line) > self.limit:
                out.append(None)
                continue
            if line.strip():
                out.append(line)



# ---------------------------------------------------------------- server


class _Client:
    """One connected front: its requests run concurrently, at most MAX_INFLIGHT at once."""

    def __init__(self, api: NodeAPI, stream: trio.abc.Stream) -> None:
        self.api = api
        self.stream = stream
        self.lock = trio.Lock()
        self.sub_scope: trio.CancelScope | None = None
        self.inflight = trio.Semaphore(MAX_INFLIGHT)

    async def send(self, obj: Mapping[str, object]) -> None:
        data = encode(obj)
        async with self.lock:
            with trio.fail_after(SEND_TIMEOUT):
                await self.stream.send_all(data)

    async def reply(self, req_id: object, result: object = None, error: tuple[str, str] | None = None) -> None:
        if error is None:
            await self.send({"type": "reply", "id": req_id, "ok": True, "result": result})
        else:
            await self.send({"type": "reply", "id": req_id, "ok": False,
                             "error": {"code": error[0], "message": error[1]}})

    async def hello(self) -> dict[str, object]:
        info: object = {}
        from punch_net.ops import wire

        with contextlib.suppress(Exception), trio.move_on_after(HELLO_TIMEOUT):
            # a node still starting may not know its peer id yet: the hello goes without it
            info = wire.unstructure_result("info", await self.api.info())
        return {"type": "hello", "protocol": PROTOCOL, "version": __version__, "pid": os.getpid(),
                **(info if isinstance(info, dict) else {})}

    async def handle(self, req_id: object, op: str, args: dict[str, object], nursery: trio.Nursery) -> None:
        try:
            result = await self._run(op, args, nursery)
        except trio.TooSlowError:
            await self.reply(req_id, error=("timeout", f"{op}: timed out"))
        except Exception as exc:  # NodeError and anything else: one line, never a traceback
            from punch_net.ops import wire

            await self.reply(req_id, error=wire.error_to_wire(exc))
        else:
            await self.reply(req_id, result)

    async def _run(self, op: str, args: dict[str, object], nursery: trio.Nursery) -> object:
        if op in API_METHODS:
            from punch_net.ops import wire

            kwargs = wire.structure_args(op, args)
            return wire.unstructure_result(op, await getattr(self.api, op)(**kwargs))
        if op == "subscribe":
            return await self._subscribe(args, nursery)
        if op == "unsubscribe":
            if self.sub_scope is not None:
                self.sub_scope.cancel()
                self.sub_scope = None
            return {"subscribed": False}
        if op == "ops":
            return [*API_METHODS, *STREAM_OPS]
        raise ControlError("unknown_op", f"unknown op {op!r} (try 'ops')")

    async def _subscribe(self, args: dict[str, object], nursery: trio.Nursery) -> object:
        unknown = sorted(set(args) - {"replay", "kinds"})
        if unknown:
            raise ControlError("bad_args", f"subscribe: unknown argument {unknown[0]!r} (takes: replay, kinds)")
        replay = args.get("replay", False)
        if not isinstance(replay, bool):
            raise ControlError("bad_args", "subscribe: 'replay' must be boolean")
        kinds = args.get("kinds")
        if kinds is not None and not (isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)):
            raise ControlError("bad_args", "subscribe: 'kinds' must be a list of event names")
        if self.sub_scope is None:
            scope = self.sub_scope = trio.CancelScope()
            try:
                # started only once the subscription exists: what happens after the reply is seen
                await nursery.start(self._events, scope, replay, set(kinds) if kinds else None)
            except BaseException:
                self.sub_scope = None
                raise
        return {"subscribed": True}

    async def _events(self, scope: trio.CancelScope, replay: bool, kinds: set[str] | None,
                      task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from punch_net.ops import wire

        began = False
        with scope:
            async with self.api.events(replay=replay) as events:
                task_status.started()
                began = True
                reported = 0
                async for event in events:
                    if kinds is None or event.kind in kinds:
                        await self.send({"type": "event", "event": wire.encode_event(event)})
                    # the subscription counts what it lost while we were blocked sending
                    dropped = _dropped(events)
                    if dropped > reported:
                        await self.send({"type": "dropped", "count": dropped - reported})
                        reported = dropped
        if not began:
            task_status.started()  # unsubscribed before it began: nothing to report


def _dropped(events: object) -> int:
    """Events a subscription lost (`Subscription.dropped`, `RemoteEvents.dropped`); 0 if it does not count."""
    count = getattr(events, "dropped", 0)
    return count if isinstance(count, int) else 0


_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)


async def serve_stream(api: NodeAPI, stream: trio.abc.Stream) -> None:
    """Serve `api` to one client over `stream` (a socket, or stdin/stdout stapled together)
    until the client closes its side or goes away; then close the stream. Starts with the
    hello line."""
    client = _Client(api, stream)
    buf = LineBuffer()
    try:
        async with trio.open_nursery() as nursery:
            await client.send(await client.hello())
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                for line in buf.feed(data):
                    if line is None:
                        await client.reply(None, error=("too_long", f"request line over {MAX_LINE} bytes"))
                        continue
                    try:
                        req_id, op, args = parse_request(line)
                    except ControlError as exc:
                        await client.reply(None, error=(exc.code, str(exc)))
                        continue

                    async def run(req_id: object = req_id, op: str = op, args: dict[str, object] = args) -> None:
                        async with client.inflight:
                            await client.handle(req_id, op, args, nursery)

                    nursery.start_soon(run)
            nursery.cancel_scope.cancel()
    except _GONE:
        pass
    except BaseExceptionGroup as group:
        _, rest = group.split(_GONE)
        if rest is not None:
            raise rest from None
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()


async def serve(api: NodeAPI, *, data_dir: Path, publish: Publish, path: Path | None = None,
                task_status: TaskStatus[Path | None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `api` on a control socket until cancelled; removes the socket file on exit.

    `path`: the socket asked for explicitly (`--control-socket`); it must work, else
    NodeError. Without it the socket goes in `data_dir` (see `choose_socket_path`) and a
    problem is only an ErrorEvent. `publish` gets `ControlListening` (and that ErrorEvent).
    `task_status.started` gets the socket path, or None when there is no socket."""

    def problem(message: str) -> None:
        """An explicitly asked-for socket must work; the default one only warns."""
        if path is not None:
            raise NodeError(message)
        publish(ev.ErrorEvent(message=f"{message}; no control socket (punch-tui --attach will not work)",
                              where="control"))
        task_status.started(None)

    try:
        (path.parent if path else data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        sock_path = choose_socket_path(data_dir, path)
    except OSError as exc:
        return problem(f"control socket: cannot create {path.parent if path else data_dir}: {exc.strerror}")
    if len(str(sock_path)) > MAX_UNIX_PATH:
        return problem(f"control socket path too long ({len(str(sock_path))} > {MAX_UNIX_PATH}): {sock_path}")
    if sock_path.exists() or sock_path.is_symlink():
        if socket_alive(sock_path):
            return problem(f"control socket {sock_path} is in use by another node")
        sock_path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the file is born 0600: no window in which others may connect
    try:
        await sock.bind(str(sock_path))
    except OSError as exc:
        sock.close()
        return problem(f"control socket {sock_path}: {exc.strerror}")
    finally:
        os.umask(old)
    sock.listen(MAX_CLIENTS)
    with contextlib.suppress(OSError):
        os.chmod(sock_path, 0o600)  # the umask already made it 0600; this is belt and braces
    listener = trio.SocketListener(sock)
    publish(ev.ControlListening(path=str(sock_path)))
    task_status.started(sock_path)
    limiter = trio.CapacityLimiter(MAX_CLIENTS)
    my_uid = os.getuid()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                uid = _peer_uid(stream.socket)  # type: ignore[arg-type]
                if uid is not None and uid not in (my_uid, 0):
                    await stream.aclose()
                    continue

                async def client(stream: trio.SocketStream = stream) -> None:
                    async with limiter:
                        await serve_stream(api, stream)

                nursery.start_soon(client)
    finally:
        with contextlib.suppress(OSError):
            sock_path.unlink()  # first: the await below is a checkpoint a cancelled task leaves at
        with trio.CancelScope(shield=True), contextlib.suppress(OSError):
            await listener.aclose()


# ---------------------------------------------------------------- client (for fronts and scripts)


class ControlClient:
    """A small trio client: `async with ControlClient(path) as c: await c.call("snapshot")`.

    Raw JSON: `call` returns the result's JSON and raises ControlError (with the server's
    code); `punch_net.ops.remote.RemoteNode` gives the typed API on top. After `subscribe`,
    iterate `events` for the event and drop-notice lines.

    No background task: whichever caller is waiting reads the socket and files what it
    reads (replies by id, events in a bounded queue), so the client can be opened and
    closed anywhere, e.g. under `trio.fail_after`. Events are read only while someone
    waits; `events_lost` counts those that found the queue full."""

    def __init__(self, path: Path | str, event_buffer: int = EVENT_BUFFER) -> None:
        self.path = str(path)
        self.on_socket = True  # False: over a stream given to `from_stream` (no new connections)
        self.hello: dict[str, object] = {}
        self.events = _EventLines(self)
        self.events_lost = 0
        self.closed = trio.Event()
        self._stream: trio.abc.Stream | None = None
        self._next = 0
        self._waiting: set[int] = set()
        self._replies: dict[int, dict[str, object]] = {}
        self._queue: deque[dict[str, object]] = deque()
        self._event_buffer = event_buffer
        self._buf = LineBuffer()
        self._pending: deque[bytes] = deque()
        self._read_lock = trio.Lock()
        self._send_lock = trio.Lock()
        self._progress = trio.Event()  # set (and replaced) whenever a reader files a line or stops

    @classmethod
    def from_stream(cls, stream: trio.abc.Stream, name: str, event_buffer: int = EVENT_BUFFER) -> ControlClient:
        """A client over an open stream whose other end runs `serve_stream`; `name` stands
        for it in errors (as the path does). Usable at once: a request sent before the
        server reads is read once it does, and `hello` is filled in when the hello line
        comes (no wait for it here, so the caller need not know when the server starts)."""
        client = cls(name, event_buffer)
        client.on_socket = False
        client._stream = stream
        return client

    async def __aenter__(self) -> ControlClient:
        if not self.on_socket:
            return self  # from_stream: already open
        try:
            self._stream = await trio.open_unix_socket(self.path)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
        try:
            with trio.fail_after(10):
                hello = json.loads(await self._read_line())
        except (ValueError, ConnectionError, trio.TooSlowError):
            hello = None
        problem = hello_problem(hello)
        if problem:
            await self.aclose()
            raise ConnectionError(f"{self.path}: {problem}")
        self.hello = hello
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.closed.set()
        self._wake()
        if self._stream is not None:
            with contextlib.suppress(Exception), trio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _read_line(self) -> bytes:
        assert self._stream is not None
        while not self._pending:
            data = await self._stream.receive_some(65536)  # cancelled: nothing is lost
            if not data:
                raise ConnectionError("control socket closed")
            self._pending.extend(line for line in self._buf.feed(data) if line is not None)
        return self._pending.popleft()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _file(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "hello":  # over a stream it arrives among the replies (see from_stream)
            self.hello = msg
        elif kind == "reply" and msg.get("id") in self._waiting:
            self._replies[msg["id"]] = msg
        elif kind in ("event", "dropped"):
            if len(self._queue) >= self._event_buffer:
                self.events_lost += 1
            else:
                self._queue.append(msg)

    async def _until(self, ready: Callable[[], T | None]) -> T:
        """Read (or wait for the task reading) until `ready()` has something."""
        while True:
            got = ready()
            if got is not None:
                return got
            if self.closed.is_set():
                raise ConnectionError("control socket closed")
            if self._read_lock.locked():
                await self._progress.wait()
                continue
            async with self._read_lock:
                try:
                    self._file(await self._read_line())
                except (OSError, ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError):
                    self.closed.set()
                finally:
                    self._wake()

    async def call(self, op: str, args: Mapping[str, object] | None = None, timeout: float = 60.0) -> object:
        """Send one request; return its result (JSON) or raise ControlError."""
        if self._stream is None or self.closed.is_set():
            raise ConnectionError("control socket closed")
        self._next += 1
        req_id = self._next
        self._waiting.add(req_id)
        try:
            with trio.fail_after(timeout):
                async with self._send_lock:
                    try:
                        await self._stream.send_all(encode({"id": req_id, "op": op, "args": dict(args or {})}))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        raise ConnectionError("control socket closed") from None
                msg = await self._until(lambda: self._replies.pop(req_id, None))
        finally:
            self._waiting.discard(req_id)
            self._replies.pop(req_id, None)
        if not msg.get("ok"):
            err = msg.get("error")
            err = err if isinstance(err, dict) else {}
            raise ControlError(str(err.get("code", "failed")), str(err.get("message", "")))
        return msg.get("result")


class _EventLines:
    """`ControlClient.events`: the event and drop-notice lines, in order, until the socket closes."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client

    def __aiter__(self) -> _EventLines:
        return self

    async def __anext__(self) -> dict[str, object]:
        queue = self._client._queue
        try:
            return await self._client._until(lambda: queue.popleft() if queue else None)
        except ConnectionError:
            raise StopAsyncIteration from None
