"""The control socket: a running node's console port for local fronts (`punch-tui
--attach`, the web view, scripts).

A Unix stream socket in the node's data dir (`control.sock`, or `control-<pid>.sock` when
another live node already holds that name), mode 0600, peers checked with SO_PEERCRED
(same user or root). The protocol is JSON lines, documented in docs/OPERATIONS.md
("Control socket"):

    node -> client, first line:  {"type": "hello", "protocol": "punch-control/1", "peer_id": ..., ...}
    client -> node:              {"id": 1, "op": "snapshot", "args": {}}
    node -> client:              {"type": "reply", "id": 1, "ok": true, "result": {...}}
                                 {"type": "reply", "id": 1, "ok": false, "error": {"code": ..., "message": ...}}
    after op "subscribe":        {"type": "event", "event": {"event": "connected", ...}}
                                 {"type": "dropped", "count": N}   (events lost: client too slow)

Requests run concurrently; replies carry the request's id. A line over 1 MiB, bad JSON
or an unknown op gets an error reply and the connection stays usable. Other subsystems
add ops with `register_op(name, handler)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from punch_net import __version__
from punch_net import events as ev

if TYPE_CHECKING:
    from punch_net.node import Node

PROTOCOL = "punch-control/1"
SOCKET_NAME = "control.sock"
MAX_LINE = 1 << 20
MAX_CLIENTS = 32
MAX_INFLIGHT = 16  # concurrent requests per client
SEND_TIMEOUT = 10.0  # a client that reads nothing for this long is dropped
EVENT_BUFFER = 5000
MAX_UNIX_PATH = 107

OpHandler = Callable[["Node", dict[str, Any]], Awaitable[Any]]
EXTRA_OPS: dict[str, OpHandler] = {}


class ControlError(Exception):
    """A request cannot be carried out; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def register_op(name: str, handler: OpHandler) -> None:
    """Add an op every node's control socket answers (e.g. `torrent.add`)."""
    EXTRA_OPS[name] = handler


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


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
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


def encode(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, default=_json_default, separators=(",", ":")) + "\n").encode()


def _json_default(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


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


# ---------------------------------------------------------------- snapshot


def snapshot(node: Node, parts: list[str] | None = None) -> dict[str, Any]:
    """Everything a console shows, as JSON-ready data (the dataclasses' own field names)."""
    want = set(parts or ["stats", "listen_addrs", "connections", "routing", "relay", "transfers",
                         "reputation", "capabilities", "network"])
    out: dict[str, Any] = {"ts": time.time()}
    errors: list[str] = []

    def grab(name: str, fn: Callable[[], Any]) -> None:
        if name not in want:
            return
        try:
            value = fn()
        except Exception as exc:  # one capability's failure must not spoil the snapshot
            errors.append(f"{name}: {exc}")
            value = None
        out[name] = _plain(value)

    grab("stats", node.stats)
    grab("listen_addrs", node.listen_addrs)
    grab("connections", node.connections)
    grab("routing", node.routing_table)
    if hasattr(node, "relay_status"):
        grab("relay", lambda: node.relay_status().to_json())
    if hasattr(node, "transfers"):
        grab("transfers", node.transfers)
    grab("reputation", lambda: node.reputation.snapshot())
    grab("capabilities", lambda: _local_caps(node))
    if getattr(node, "network_map", None) is not None:
        grab("network", lambda: node.network_map.snapshot())  # type: ignore[attr-defined]
    out["errors"] = errors
    return out


def _local_caps(node: Node) -> dict[str, Any]:
    from punch_net.routing.capabilities import local_capabilities

    return local_capabilities(node.config.data_dir)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- ops


def _str_arg(args: dict[str, Any], name: str, limit: int = 4096) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ControlError("bad_args", f"'{name}' must be a non-empty string")
    return value


def _timeout_arg(args: dict[str, Any]) -> float | None:
    t = args.get("timeout")
    if t is None:
        return None
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 300:
        raise ControlError("bad_args", "'timeout' must be a number of seconds in (0, 300]")
    return float(t)


async def _op(node: Node, op: str, args: dict[str, Any]) -> Any:
    from punch_net.routing import selection

    if op == "ping":  # the node itself answers; `peer` pings a peer over libp2p
        if "peer" not in args:
            return {"pong": True, "ts": time.time()}
        return {"rtt_ms": round(await node.ping(_str_arg(args, "peer")) * 1000, 3)}
    if op == "snapshot":
        parts = args.get("parts")
        if parts is not None and not (isinstance(parts, list) and all(isinstance(p, str) for p in parts)):
            raise ControlError("bad_args", "'parts' must be a list of names")
        return snapshot(node, parts)
    if op == "dial":
        return {"peer_id": str(await node.dial(_str_arg(args, "addr")))}
    if op == "disconnect":
        await node.disconnect(_str_arg(args, "peer"))
        return {"disconnected": True}
    if op == "find_peers":
        peers = await node.find_peers(_str_arg(args, "namespace", 256), _timeout_arg(args))
        return [{"peer_id": str(p.peer_id), "addrs": [str(a) for a in p.addrs]} for p in peers]
    if op == "provide":
        return {"ok": await node.provide_namespace(_str_arg(args, "namespace", 256))}
    if op == "send":
        cmd_args = args.get("args", {})
        if not isinstance(cmd_args, dict):
            raise ControlError("bad_args", "'args' must be an object")
        resp = await node.request(_str_arg(args, "peer"), _str_arg(args, "command", 256), cmd_args,
                                  _timeout_arg(args))
        return resp.to_json() if hasattr(resp, "to_json") else asdict(resp)
    if op == "send_best":
        cmd_args = args.get("args", {})
        if not isinstance(cmd_args, dict):
            raise ControlError("bad_args", "'args' must be an object")
        res = await selection.send_to_best(node, _str_arg(args, "namespace", 256),
                                           _str_arg(args, "command", 256), cmd_args, timeout=_timeout_arg(args))
        return {"peer_id": res.peer_id, "result": res.result, "attempts": res.attempts,
                "candidates": [c.to_json() for c in res.candidates]}
    if op == "rank":
        ns = _str_arg(args, "namespace", 256)
        return [c.to_json() for c in await selection.candidates(node, ns)]
    if op == "reputation":
        if "peer" in args:
            return node.reputation.details(_str_arg(args, "peer"))
        return node.reputation.snapshot()
    if op == "ops":
        return sorted([*BUILTIN_OPS, "subscribe", "unsubscribe", *EXTRA_OPS])
    extra = EXTRA_OPS.get(op)
    if extra is not None:
        return await extra(node, args)
    raise ControlError("unknown_op", f"unknown op {op!r} (try 'ops')")


BUILTIN_OPS = ("ping", "snapshot", "dial", "disconnect", "find_peers", "provide", "send", "send_best",
               "rank", "reputation", "ops")


# ---------------------------------------------------------------- server


class _Client:
    def __init__(self, node: Node, stream: trio.SocketStream) -> None:
        self.node = node
        self.stream = stream
        self.lock = trio.Lock()
        self.sub_scope: trio.CancelScope | None = None
        self.inflight = trio.Semaphore(MAX_INFLIGHT)

    async def send(self, obj: dict[str, Any]) -> None:
        data = encode(obj)
        async with self.lock:
            with trio.fail_after(SEND_TIMEOUT):
                await self.stream.send_all(data)

    async def reply(self, req_id: Any, result: Any = None, error: tuple[str, str] | None = None) -> None:
        if error is None:
            await self.send({"type": "reply", "id": req_id, "ok": True, "result": result})
        else:
            await self.send({"type": "reply", "id": req_id, "ok": False,
                             "error": {"code": error[0], "message": error[1]}})

    async def handle(self, req_id: Any, op: str, args: dict[str, Any], nursery: trio.Nursery) -> None:
        try:
            if op == "subscribe":
                kinds = args.get("kinds")
                if kinds is not None and not (isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)):
                    raise ControlError("bad_args", "'kinds' must be a list of event names")
                if self.sub_scope is None:
                    self.sub_scope = trio.CancelScope()
                    nursery.start_soon(self._events, self.sub_scope, set(kinds) if kinds else None)
                await self.reply(req_id, {"subscribed": True})
                return
            if op == "unsubscribe":
                if self.sub_scope is not None:
                    self.sub_scope.cancel()
                    self.sub_scope = None
                await self.reply(req_id, {"subscribed": False})
                return
            result = await _op(self.node, op, args)
        except ControlError as exc:
            await self.reply(req_id, error=(exc.code, str(exc)))
            return
        except trio.TooSlowError:
            await self.reply(req_id, error=("timeout", f"{op}: timed out"))
            return
        except Exception as exc:
            code = getattr(exc, "code", None) or "failed"
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            await self.reply(req_id, error=(str(code), text))
            return
        await self.reply(req_id, result)

    async def _events(self, scope: trio.CancelScope, kinds: set[str] | None) -> None:
        with scope, self.node.bus.subscribe(EVENT_BUFFER) as events:
            reported = 0
            sender = _sender_of(self.node, events)
            async for event in events:
                if kinds is None or event.kind in kinds:
                    await self.send({"type": "event", "event": event.to_json()})
                dropped = self.node.bus._subs.get(sender, 0)
                if dropped > reported:
                    await self.send({"type": "dropped", "count": dropped - reported})
                    reported = dropped


def _sender_of(node: Node, recv: Any) -> Any:
    """The bus's send side paired with `recv` (to read its drop count)."""
    for chan in node.bus._subs:  # the bus keeps drop counts per subscriber
        if getattr(chan, "_state", None) is getattr(recv, "_state", object()):
            return chan
    return None


async def _serve_client(node: Node, stream: trio.SocketStream) -> None:
    client = _Client(node, stream)
    buf = LineBuffer()
    try:
        async with trio.open_nursery() as nursery:
            await client.send({"type": "hello", "protocol": PROTOCOL, "version": __version__, "pid": os.getpid(),
                               "role": node.config.role, "peer_id": str(node.peer_id) if node.running else None,
                               "listen_addrs": node.listen_addrs() if node.running else []})
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

                    async def run(req_id: Any = req_id, op: str = op, args: dict[str, Any] = args) -> None:
                        async with client.inflight:
                            await client.handle(req_id, op, args, nursery)

                    nursery.start_soon(run)
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        pass
    except BaseExceptionGroup as group:
        _, rest = group.split((trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError))
        if rest is not None:
            raise rest from None
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()


async def serve(node: Node, path: Path | None = None, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on the node's control socket until cancelled; removes the socket file on exit."""
    from punch_net.node import NodeError

    data_dir = node.config.data_dir
    explicit = path or getattr(node.config, "control_socket", None)

    def problem(message: str) -> None:
        """An explicitly asked-for socket must work; the default one only warns."""
        if explicit is not None:
            raise NodeError(message)
        node.bus.publish(ev.ErrorEvent(message=f"{message}; no control socket (punch-tui --attach "
                                               f"will not work)", where="control"))
        task_status.started(None)

    try:
        (explicit.parent if explicit else data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        sock_path = choose_socket_path(data_dir, explicit)
    except OSError as exc:
        return problem(f"control socket: cannot create {data_dir}: {exc.strerror}")
    if len(str(sock_path)) > MAX_UNIX_PATH:
        return problem(f"control socket path too long ({len(str(sock_path))} > {MAX_UNIX_PATH}): {sock_path}")
    if sock_path.exists() or sock_path.is_symlink():
        if socket_alive(sock_path):
            return problem(f"control socket {sock_path} is in use by another node")
        sock_path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
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
    node.control_path = sock_path  # type: ignore[attr-defined]
    node.bus.publish(ev.ControlListening(path=str(sock_path)))
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
                        await _serve_client(node, stream)

                nursery.start_soon(client)
    finally:
        with contextlib.suppress(OSError):
            sock_path.unlink()  # first: the await below is a checkpoint a cancelled task leaves at
        with trio.CancelScope(shield=True), contextlib.suppress(OSError):
            await listener.aclose()


# ---------------------------------------------------------------- client (for fronts and scripts)


class ControlClient:
    """A small trio client: `async with ControlClient(path) as c: await c.call("snapshot")`.

    Events (after `subscribe`) and drop notices are queued on `events`."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.hello: dict[str, Any] = {}
        self._stream: trio.SocketStream | None = None
        self._next = 0
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._event_send, self.events = trio.open_memory_channel[dict[str, Any]](EVENT_BUFFER)
        self._nursery_cm: Any = None
        self.closed = trio.Event()

    async def __aenter__(self) -> ControlClient:
        try:
            self._stream = await trio.open_unix_socket(self.path)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
        self._buf = LineBuffer()
        self._pending: list[bytes] = []
        with trio.fail_after(10):
            self.hello = await self._read_one()
        if self.hello.get("protocol") != PROTOCOL:
            await self._stream.aclose()
            raise ConnectionError(f"{self.path}: not a Punch control socket")
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        nursery.start_soon(self._reader)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.aclose()
        if self._nursery_cm is not None:
            with contextlib.suppress(Exception):
                await self._nursery_cm.__aexit__(None, None, None)

    async def _read_one(self) -> dict[str, Any]:
        assert self._stream is not None
        while not self._pending:
            data = await self._stream.receive_some(65536)
            if not data:
                raise ConnectionError("control socket closed")
            self._pending.extend(line for line in self._buf.feed(data) if line is not None)
        return dict(json.loads(self._pending.pop(0)))

    async def _reader(self) -> None:
        try:
            while True:
                msg = await self._read_one()
                if msg.get("type") == "reply" and msg.get("id") in self._waiting:
                    await self._waiting.pop(msg["id"]).send(msg)
                elif msg.get("type") in ("event", "dropped"):
                    with contextlib.suppress(trio.WouldBlock):
                        self._event_send.send_nowait(msg)
        except (ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
            pass
        finally:
            self.closed.set()
            self._event_send.close()
            for chan in self._waiting.values():
                chan.close()

    async def call(self, op: str, args: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        """Send one request; return its result or raise ControlError."""
        assert self._stream is not None
        self._next += 1
        req_id = self._next
        send, recv = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[req_id] = send
        with trio.fail_after(timeout):
            await self._stream.send_all(encode({"id": req_id, "op": op, "args": args or {}}))
            try:
                msg = await recv.receive()
            except trio.EndOfChannel:
                raise ConnectionError("control socket closed") from None
        if not msg.get("ok"):
            err = msg.get("error") or {}
            raise ControlError(str(err.get("code", "failed")), str(err.get("message", "")))
        return msg.get("result")
