"""`punch-tui --attach SOCKET`: the same console on a node that is already running.

`AttachBridge` is the second implementation of the bridge the app talks to (the first,
`NodeBridge`, runs a Node in trio guest mode). It speaks the control-socket protocol
(punch_net/control.py, JSON lines) on Textual's own asyncio loop: it subscribes to the
node's events, polls `snapshot`, and turns each into the same Textual messages the app
already handles, with the same typed events and snapshot dataclasses. Commands from the
UI (`bridge.call(bridge.node.dial, addr)`) become control requests.

Quitting only closes the socket: the node keeps running. When the node goes away the
bridge posts `AttachStatus("disconnected, retrying")` and reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol, TypeVar

from textual.message import Message

from punch_net import events as ev
from punch_net.node import ConnectionInfo, RoutingBucket, RoutingPeer, RoutingTableInfo, StreamInfo
from punch_net.ops.control import MAX_LINE, PROTOCOL, LineBuffer, default_socket_path, find_sockets
from punch_tui.bridge import BridgeError
from punch_tui.messages import NodeEvents, NodeStarted, SnapshotReady
from punch_tui.snapshot import Snapshot

T = TypeVar("T")
REQUEST_TIMEOUT = 60.0
RETRY_MIN = 0.5
RETRY_MAX = 5.0
CONNECT_TIMEOUT = 5.0
TORRENT_ROLES = {"torrent-server", "torrent-client"}  # roles whose node runs a torrent manager


class AttachError(Exception):
    """No node to attach to (one line for the terminal)."""


class AttachStatus(Message):
    """Connection state of an attached console: "connected" or "disconnected, retrying"."""

    def __init__(self, state: str, detail: str = "") -> None:
        super().__init__()
        self.state = state
        self.detail = detail


class _Poster(Protocol):
    def post_message(self, message: Any) -> bool: ...


# ---------------------------------------------------------------- finding the socket


def resolve_socket(given: str | None, data_dir: Path) -> Path:
    """The socket to attach to: the given path (a directory means its control.sock), or
    the data dir's control.sock, or its only live control-<pid>.sock."""
    if given:
        path = Path(given).expanduser()
        if path.is_dir():
            data_dir, path = path, default_socket_path(path)
        if path.exists():
            return path
        if not path.is_dir() and given:
            raise AttachError(f"no control socket at {path} (is the node running? `punch ROLE` "
                              f"prints its socket at start)")
    default = default_socket_path(data_dir)
    if default.exists():
        return default
    live = find_sockets(data_dir)
    if len(live) == 1:
        return live[0]
    if not live:
        raise AttachError(f"no running node found in {data_dir} (start one with `punch ROLE`, "
                          f"or give the socket path)")
    raise AttachError(f"several nodes run in {data_dir}; choose one: {' '.join(str(p) for p in live)}")


def read_hello(path: Path, timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """Connect once, synchronously, to learn the node's role before the UI starts."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        buf = b""
        while b"\n" not in buf and len(buf) < MAX_LINE:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except OSError as exc:
        raise AttachError(f"cannot attach to {path}: {exc.strerror or exc}") from None
    finally:
        s.close()
    try:
        hello = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        hello = None
    if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL:
        raise AttachError(f"{path} is not a Punch control socket")
    return hello


# ---------------------------------------------------------------- JSON -> the app's types


def _event_classes() -> dict[str, type[ev.Event]]:
    with contextlib.suppress(ImportError):
        import punch_net.torrent.events  # noqa: F401 - registers the torrent event classes
    out: dict[str, type[ev.Event]] = {}
    todo: list[type[ev.Event]] = [ev.Event]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is not ev.Event and dataclasses.is_dataclass(cls):
            out.setdefault(cls.kind, cls)
    return out


_EVENTS: dict[str, type[ev.Event]] = {}


def decode_event(data: dict[str, Any]) -> ev.Event | None:
    """A typed event from its `to_json()` form; None for kinds this console does not know."""
    if not _EVENTS:
        _EVENTS.update(_event_classes())
    cls = _EVENTS.get(str(data.get("event")))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except (TypeError, ValueError):
        return None


def _build(cls: Any, data: dict[str, Any], **nested: Any) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names and k not in nested}, **nested)


def decode_snapshot(data: dict[str, Any]) -> Snapshot:
    """The app's Snapshot from a control-socket `snapshot` result."""
    conns = [_build(ConnectionInfo, c, streams=[_build(StreamInfo, s) for s in c.get("streams", [])])
             for c in data.get("connections") or []]
    routing = None
    r = data.get("routing")
    if isinstance(r, dict):
        buckets = [RoutingBucket(b["cpl"], [_build(RoutingPeer, p) for p in b.get("peers", [])])
                   for b in r.get("buckets", [])]
        routing = _build(RoutingTableInfo, r, buckets=buckets)
    fields = {f.name for f in dataclasses.fields(Snapshot)}
    extra: dict[str, Any] = {}
    if "network" in fields:
        extra["network"] = data.get("network")
    return Snapshot(ts=float(data.get("ts") or time.time()), stats=data.get("stats") or {},
                    listen_addrs=data.get("listen_addrs") or [], connections=conns, routing=routing,
                    transfers=data.get("transfers"), relay=data.get("relay"),
                    extra_errors=list(data.get("errors") or []), **extra)


# ---------------------------------------------------------------- the bridge


class RemoteCallError(Exception):
    """The node answered a request with an error (code: message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message}" if code in ("failed",) else f"{code}: {message}")
        self.code = code


class RemoteNode:
    """The Node methods the console calls, carried out by the attached node."""

    def __init__(self, bridge: AttachBridge) -> None:
        self._bridge = bridge

    @property
    def peer_id(self) -> str:
        return str(self._bridge.hello.get("peer_id") or "")

    @property
    def running(self) -> bool:
        return self._bridge.running

    def listen_addrs(self) -> list[str]:
        return list(self._bridge.hello.get("listen_addrs") or [])

    async def dial(self, addr: str) -> str:
        return str((await self._bridge.request("dial", {"addr": addr}))["peer_id"])

    async def find_peers(self, namespace: str, timeout: float | None = None) -> list[Any]:
        args: dict[str, Any] = {"namespace": namespace}
        if timeout:
            args["timeout"] = timeout
        found = await self._bridge.request("find_peers", args)
        return [SimpleNamespace(peer_id=p["peer_id"], addrs=p["addrs"]) for p in found]

    async def ping(self, peer: str, timeout: float = 5.0) -> float:
        return float((await self._bridge.request("ping", {"peer": str(peer)}))["rtt_ms"]) / 1000.0

    async def disconnect(self, peer: str) -> None:
        await self._bridge.request("disconnect", {"peer": str(peer)})

    async def request(self, peer: str, command: str, args: dict[str, Any] | None = None,
                      timeout: float | None = None) -> dict[str, Any]:
        req: dict[str, Any] = {"peer": str(peer), "command": command, "args": args or {}}
        if timeout:
            req["timeout"] = timeout
        return dict(await self._bridge.request("send", req))

    async def send_to_best(self, namespace: str, command: str, args: dict[str, Any] | None = None,
                           timeout: float | None = None) -> dict[str, Any]:
        return dict(await self._bridge.request("send_best", {"namespace": namespace, "command": command,
                                                              "args": args or {}}))

    async def rank(self, namespace: str) -> list[dict[str, Any]]:
        return list(await self._bridge.request("rank", {"namespace": namespace}))

    @property
    def torrent(self) -> RemoteTorrent | None:
        """The node's torrent manager, when its role runs one."""
        return RemoteTorrent(self._bridge) if TORRENT_ROLES & {self._bridge.hello.get("role")} else None


class RemoteTorrent:
    """The TorrentManager methods the Transfers tab calls, as `torrent.*` control requests."""

    def __init__(self, bridge: AttachBridge) -> None:
        self._bridge = bridge

    async def snapshot(self) -> list[dict[str, Any]]:
        return list(await self._bridge.request("torrent.snapshot"))

    async def add(self, info_hash: bytes) -> None:
        await self._bridge.request("torrent.add", {"info_hash": info_hash.hex()})

    async def pause(self, info_hash: str) -> None:
        await self._bridge.request("torrent.pause", {"info_hash": info_hash})

    async def resume(self, info_hash: str) -> None:
        await self._bridge.request("torrent.resume", {"info_hash": info_hash})

    async def cancel(self, info_hash: str) -> None:
        await self._bridge.request("torrent.cancel", {"info_hash": info_hash})

    async def verify(self, info_hash: str) -> list[int]:
        return list((await self._bridge.request("torrent.verify", {"info_hash": info_hash}))["bad_pieces"])

    async def catalogue(self, timeout: float | None = None) -> list[dict[str, Any]]:
        args = {} if timeout is None else {"timeout": timeout}
        wait = (timeout or 10.0) + REQUEST_TIMEOUT
        return list(await self._bridge.request("torrent.catalogue", args, timeout=wait))


class AttachBridge:
    """Connects the app to a running node's control socket (see the module docstring)."""

    attached = True

    def __init__(self, path: Path | str, target: _Poster, poll_interval: float = 1.0,
                 hello: dict[str, Any] | None = None) -> None:
        self.path = str(path)
        self.target = target
        self.poll_interval = poll_interval
        self.hello: dict[str, Any] = dict(hello or {})
        self.node = RemoteNode(self)
        self.running = False
        self.failure: str | None = None
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._stopping = False

    # ------------------------------------------------------------ the app's interface

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if not self.running:
            raise BridgeError(self.failure or "disconnected from the node, retrying")
        return await fn(*args)

    async def stop(self, timeout: float = 5.0) -> None:
        """Detach (the node keeps running)."""
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout)

    @property
    def finished(self) -> bool:
        return self._task is not None and self._task.done()

    # ------------------------------------------------------------ protocol

    async def request(self, op: str, args: dict[str, Any] | None = None, timeout: float = REQUEST_TIMEOUT) -> Any:
        writer = self._writer
        if writer is None or not self.running:
            raise BridgeError("disconnected from the node, retrying")
        self._next += 1
        req_id = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        try:
            writer.write((json.dumps({"id": req_id, "op": op, "args": args or {}}) + "\n").encode())
            await writer.drain()
            msg = await asyncio.wait_for(fut, timeout)
        except (ConnectionError, OSError) as exc:
            raise BridgeError(f"lost the node: {exc}") from None
        except TimeoutError:
            raise BridgeError(f"{op}: the node did not answer within {timeout:g}s") from None
        finally:
            self._waiting.pop(req_id, None)
        if not msg.get("ok"):
            err = msg.get("error") or {}
            raise RemoteCallError(str(err.get("code", "failed")), str(err.get("message", "")))
        return msg.get("result")

    async def _run(self) -> None:
        delay = RETRY_MIN
        while not self._stopping:
            try:
                await self._session()
                delay = RETRY_MIN
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection refused, reset, bad data: retry
                self.failure = f"disconnected, retrying ({exc})"
            self.running = False
            if self._stopping:
                return
            self.target.post_message(AttachStatus("disconnected, retrying", self.path))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            self.reconnects += 1

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path, limit=MAX_LINE * 2),
                                                CONNECT_TIMEOUT)
        self._writer = writer
        buf = LineBuffer()
        pending: list[bytes] = []
        poller: asyncio.Task[None] | None = None
        try:
            while not pending:
                data = await asyncio.wait_for(reader.read(65536), CONNECT_TIMEOUT)
                if not data:
                    raise ConnectionError("closed before hello")
                pending.extend(x for x in buf.feed(data) if x is not None)
            hello = json.loads(pending.pop(0))
            if hello.get("protocol") != PROTOCOL:
                raise ConnectionError("not a Punch control socket")
            self.hello = hello
            self.running = True
            self.failure = None
            self.target.post_message(AttachStatus("connected", self.path))
            self.target.post_message(NodeStarted(str(hello.get("peer_id") or ""), list(hello.get("listen_addrs")
                                                                                       or [])))
            poller = asyncio.get_running_loop().create_task(self._poll())
            self._handle_lines(pending)
            writer.write(b'{"id": 0, "op": "subscribe"}\n')
            await writer.drain()
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the node closed the control socket")
                self._handle_lines([x for x in buf.feed(data) if x is not None])
        finally:
            self.running = False
            self._writer = None
            if poller is not None:
                poller.cancel()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("control socket closed"))
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _handle_lines(self, lines: list[bytes]) -> None:
        batch: list[ev.Event] = []
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            kind = msg.get("type")
            if kind == "reply":
                fut = self._waiting.get(msg.get("id"))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif kind == "event" and isinstance(msg.get("event"), dict):
                event = decode_event(msg["event"])
                if event is not None:
                    batch.append(event)
        if batch:
            self.target.post_message(NodeEvents(batch))

    async def _poll(self) -> None:
        while self.running:
            started = time.monotonic()
            try:
                data = await self.request("snapshot", {}, timeout=max(10.0, self.poll_interval * 5))
                self.target.post_message(SnapshotReady(decode_snapshot(data)))
            except (BridgeError, RemoteCallError, KeyError, TypeError, ValueError):
                pass
            await asyncio.sleep(max(0.05, self.poll_interval - (time.monotonic() - started)))
