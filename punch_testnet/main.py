"""`punch testnet`: a local network on loopback, one node per process.

A bootstrap server starts first; every other node (`punch listener`, `punch server`, or
`punch torrent-server` when that role exists) bootstraps to a few random nodes that are
already up, so start-up never has everyone dial one node. The controller reads each
child's `--json` events (listening, bootstrapped) and drives it through `child.api`, a
`RemoteNode` over the child's stdin/stdout: the control protocol of the control socket
(punch_testnet/agent.py; no libp2p connection, so watching adds nothing to the network it
measures). It polls `health()` for the status lines and stops every child on ctrl+c,
SIGTERM or after `--duration`. Children run with PUNCH_TESTNET=1 (which serves the API on
their stdin/stdout), in their own session, and stop when their stdin closes, i.e. when the
controller is gone, even if it was SIGKILLed. (Not PR_SET_PDEATHSIG: trio forks from a
worker thread, and that signal fires when the forking *thread* exits.)

`Testnet` is the programmatic API the benchmark and the tests use.
"""

from __future__ import annotations

import argparse
import array
import functools
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from punch_net.api import Health, NodeError
from punch_net.cli.main import EXIT_STDOUT_CLOSED, StdoutClosed, build_parser, cancel_on_signal, detach_stdout
from punch_net.groups import first_error
from punch_net.ops.remote import RemoteNode

HELP = "start a local test network of N node processes on 127.0.0.1"
BOOTSTRAP_FANOUT = 2  # random earlier nodes each new node bootstraps to
START_TIMEOUT = 60.0  # seconds one child may take to listen and bootstrap
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
POLL_CONCURRENCY = 16
POLL_TIMEOUT = 5.0
EXIT_USAGE = 2

Emit = Callable[[dict[str, Any]], None]


class TestnetError(Exception):
    """The network cannot be started as asked; one line for humans."""


@dataclass(eq=False)  # hashable by identity (trio limiter borrower)
class Child:
    index: int
    role: str
    argv: list[str]
    proc: Any = None  # trio.Process or ForkedProc: pid, stdin, stdout, returncode, wait(), send_signal()
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    listening: trio.Event = field(default_factory=trio.Event)
    up: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)
    launched_at: float = 0.0
    up_at: float | None = None
    returncode: int | None = None
    killed: bool = False
    health: Health | None = None  # the last poll's answer
    remote: RemoteNode | None = None  # over the child's stdin/stdout (see `api`)
    control_lines: trio.MemorySendChannel[bytes] | None = None  # its stdout's control lines, to `remote`

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def api(self) -> RemoteNode:
        """The node's NodeAPI, over its stdin/stdout; usable from launch (requests wait in
        the pipe until the node serves them). A call to a node that is gone raises
        ControlError("disconnected")."""
        if self.remote is None:
            raise TestnetError(f"node {self.index} was not started")
        return self.remote

    @property
    def dial_addr(self) -> str:
        for a in self.addrs:
            if "/ip4/127.0.0.1/" in a:
                return a
        return self.addrs[0] if self.addrs else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self.exited.is_set()


class _LineFeed(trio.abc.ReceiveStream):
    """The control lines of a child's stdout, as the receive side of its RemoteNode: the
    pump reads stdout (it needs the `--json` event lines too) and passes control lines on."""

    def __init__(self, lines: trio.MemoryReceiveChannel[bytes]) -> None:
        self._lines = lines

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._lines.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return b""  # the child's stdout closed: the client sees the node gone

    async def aclose(self) -> None:
        await self._lines.aclose()


def plan_roles(nodes: int, listeners: int, torrent_servers: int) -> list[str]:
    """Role of each node: the bootstrap server, then listeners, torrent servers, servers."""
    if nodes < 1:
        raise TestnetError("--nodes must be at least 1")
    if listeners < 0 or torrent_servers < 0:
        raise TestnetError("--listeners and --torrent-servers cannot be negative")
    if listeners + torrent_servers > nodes - 1:
        raise TestnetError(f"--listeners + --torrent-servers must leave the bootstrap node "
                           f"(at most {nodes - 1} with --nodes {nodes})")
    rest = nodes - 1 - listeners - torrent_servers
    return ["server"] + ["listener"] * listeners + ["torrent-server"] * torrent_servers + ["server"] * rest


def summarise(values: list[float]) -> dict[str, float]:
    if not values:
        return {"min": 0, "avg": 0, "max": 0}
    return {"min": min(values), "avg": round(statistics.fmean(values), 1), "max": max(values)}


class ForkedProc:
    """A node process forked by the zygote: the subset of trio.Process the controller uses."""

    def __init__(self, pid: int, stdin_fd: int, stdout_fd: int) -> None:
        self.pid = pid
        self.stdin = trio.lowlevel.FdStream(stdin_fd)
        self.stdout = trio.lowlevel.FdStream(stdout_fd)
        self.returncode: int | None = None
        self._exited = trio.Event()

    def _set_exit(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    async def wait(self) -> int:
        """Exit code from the zygote, or -1 once the pid is gone (reaped) without a report
        reaching us (the controller stops reading the zygote while shutting down)."""
        while not self._exited.is_set():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self._set_exit(-1)
                break
            with trio.move_on_after(0.05):
                await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """Controller side of punch_testnet.zygote: one preloaded interpreter forks nodes."""

    def __init__(self) -> None:
        self.proc: trio.Process | None = None
        self._sock: Any = None
        self._lock = trio.Lock()
        self._replies: trio.MemorySendChannel[dict[str, Any]] | None = None
        self._recv: trio.MemoryReceiveChannel[dict[str, Any]] | None = None
        self._by_pid: dict[int, ForkedProc] = {}

    async def start(self, nursery: trio.Nursery, log: Any) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = await trio.lowlevel.open_process(
                # -OO: no docstrings in the preloaded code objects (~3 MB less in every node).
                [sys.executable, "-OO", "-m", "punch_testnet.zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                pass_fds=[theirs.fileno()], start_new_session=True,
                env=dict(os.environ, PUNCH_TESTNET="1"))
        finally:
            theirs.close()
        self._sock = trio.socket.from_stdlib_socket(ours)
        self._replies, self._recv = trio.open_memory_channel(16)
        nursery.start_soon(self._reader)
        with trio.fail_after(START_TIMEOUT):
            ready = await self._recv.receive()
        if "ready" not in ready:
            raise TestnetError(f"fork server failed to start: {ready}")

    async def _reader(self) -> None:
        assert self._replies is not None
        while True:
            try:
                data = await self._sock.recv(65536)
            except (OSError, trio.ClosedResourceError):
                data = b""
            if not data:
                await self._replies.aclose()
                for proc in self._by_pid.values():
                    if proc.returncode is None:
                        proc._set_exit(-1)
                return
            msg = json.loads(data)
            if "exit" in msg:
                proc = self._by_pid.pop(int(msg["exit"]), None)  # type: ignore[arg-type]
                if proc is not None:
                    proc._set_exit(int(msg["code"]))
            else:
                await self._replies.send(msg)

    async def spawn(self, argv: list[str], stderr_fd: int) -> ForkedProc:
        """Fork `punch ARGV[3:]` (argv as for a fresh interpreter: python -m punch_net.cli ...)."""
        assert self._recv is not None
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            async with self._lock:
                fds = array.array("i", [in_r, out_w, stderr_fd])
                await self._sock.sendmsg([json.dumps({"argv": argv[3:]}).encode()],
                                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                with trio.fail_after(10):
                    reply = await self._recv.receive()
        except (OSError, trio.EndOfChannel, trio.TooSlowError) as exc:
            for fd in (in_w, out_r):
                os.close(fd)
            raise TestnetError(f"fork server: {exc or 'no reply'}") from None
        finally:
            os.close(in_r)
            os.close(out_w)
        if "pid" not in reply:
            for fd in (in_w, out_r):
                os.close(fd)
            raise TestnetError(f"fork server: {reply.get('error', reply)}")
        proc = ForkedProc(int(reply["pid"]), in_w, out_r)
        self._by_pid[proc.pid] = proc
        return proc

    async def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self.proc is not None:
            with trio.move_on_after(STOP_GRACE):
                await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()
                with trio.move_on_after(STOP_GRACE):
                    await self.proc.wait()


@functools.cache
def _accepts(role: str, flag: str) -> bool:
    """Whether `punch ROLE` has FLAG (roles grow flags as other work lands)."""
    parser = build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else []:  # type: ignore[attr-defined]
        sub = getattr(action, "choices", {}).get(role)
        if sub is not None:
            return flag in sub._option_string_actions
    return False


class Testnet:
    """Start, watch, drive and stop a local network of Punch node processes."""

    __test__ = False  # not a pytest class

    def __init__(self, nodes: int, listeners: int = 0, torrent_servers: int = 0,
                 base_port: int | None = None, emit: Emit | None = None,
                 start_concurrency: int | None = None, log_dir: Path | None = None,
                 config_file: Path | None = None, preload: bool = True) -> None:
        roles = plan_roles(nodes, listeners, torrent_servers)
        if base_port is not None and not 1 <= base_port <= 65535 - nodes:
            raise TestnetError(f"--base-port {base_port} leaves no room for {nodes} ports")
        self.base_port = base_port
        self.emit = emit or (lambda event: None)
        self.start_concurrency = start_concurrency or max(8, 4 * (os.cpu_count() or 2))
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="punch-testnet-"))
        self.config_file = config_file
        self.fork_server: ForkServer | None = ForkServer() if preload else None
        self.children = [Child(i, role, []) for i, role in enumerate(roles)]
        self.started_at = 0.0
        self.all_up_at: float | None = None
        self._nursery: trio.Nursery | None = None
        self._limiter = trio.CapacityLimiter(self.start_concurrency)

    # ------------------------------------------------------------------ start

    def _argv(self, child: Child, bootstrap: list[str]) -> list[str]:
        port = 0 if self.base_port is None else self.base_port + child.index
        argv = [sys.executable, "-m", "punch_testnet.child", child.role, "--listen-addr", "127.0.0.1",
                "--port", str(port), "--ephemeral", "--json"]
        if self.config_file is not None:
            argv += ["--config", str(self.config_file)]
        if _accepts(child.role, "--no-control"):
            argv.append("--no-control")  # ephemeral nodes would all share one default socket path
        if child.role == "torrent-server":
            share = self.log_dir / f"share-{child.index:03d}"
            share.mkdir(exist_ok=True)
            (share / f"hello-{child.index}.txt").write_text(f"hello from testnet node {child.index}\n")
            argv += ["--share-dir", str(share)]
        for addr in bootstrap:
            argv += ["--bootstrap", addr]
        return argv

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the controller and every child; runs until cancelled, then stops all."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self.started_at = time.monotonic()
                if self.fork_server is not None:
                    with (self.log_dir / "zygote.log").open("wb") as log:
                        await self.fork_server.start(nursery, log)
                await self._launch_all(nursery)
                task_status.started()
                await trio.sleep_forever()
            finally:
                # Inside the nursery: the per-child readers are still draining stdout.
                with trio.CancelScope(shield=True):
                    await self.stop_all()
                    if self.fork_server is not None:
                        await self.fork_server.stop()

    async def _launch_all(self, nursery: trio.Nursery) -> None:
        first = self.children[0]
        await self._launch(nursery, first, [])
        with trio.fail_after(START_TIMEOUT):
            await first.up.wait()
        self.emit({"event": "bootstrap", "addr": first.dial_addr, "peer_id": first.peer_id,
                   "pid": first.pid})
        for child in self.children[1:]:
            await self._limiter.acquire_on_behalf_of(child)
            up = [c for c in self.children if c.up.is_set() and c.alive]
            targets = random.sample(up, min(BOOTSTRAP_FANOUT, len(up)))
            await self._launch(nursery, child, [t.dial_addr for t in targets], limited=True)
        nursery.start_soon(self._watch_all_up)

    async def _watch_all_up(self) -> None:
        for child in self.children:
            await child.up.wait()
        self.all_up_at = time.monotonic()

    async def _launch(self, nursery: trio.Nursery, child: Child, bootstrap: list[str],
                      limited: bool = False) -> None:
        child.argv = self._argv(child, bootstrap)
        env = dict(os.environ, PUNCH_TESTNET="1")
        log = (self.log_dir / f"node-{child.index:03d}-{child.role}.log").open("wb")
        try:
            if self.fork_server is not None:
                child.proc = await self.fork_server.spawn(child.argv, log.fileno())
            else:
                child.proc = await trio.lowlevel.open_process(
                    child.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                    start_new_session=True)
        except (OSError, TestnetError) as exc:
            log.close()
            if limited:
                self._limiter.release_on_behalf_of(child)
            raise TestnetError(f"cannot start node {child.index}: {exc}") from None
        log.close()  # the child holds its own copy
        child.launched_at = time.monotonic()
        # Unbounded: control lines are replies to our own requests (and one hello), so their
        # number is bounded by what we asked; a bounded channel could stall the event pump.
        send, recv = trio.open_memory_channel[bytes](math.inf)
        child.control_lines = send
        child.remote = RemoteNode.from_stream(trio.StapledStream(child.proc.stdin, _LineFeed(recv)),
                                              f"node {child.index}")
        nursery.start_soon(self._pump, child, limited)

    async def _pump(self, child: Child, limited: bool) -> None:
        """Read the child's JSON events until it exits; mark it listening/up."""
        assert child.proc is not None and child.proc.stdout is not None
        buf = b""
        released = not limited

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._limiter.release_on_behalf_of(child)

        try:
            async for chunk in child.proc.stdout:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._on_child_line(child, line)
                if child.up.is_set():
                    release()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            release()
            if child.control_lines is not None:
                child.control_lines.close()
            with trio.CancelScope(shield=True):
                child.returncode = await child.proc.wait()
            child.exited.set()
            if not child.killed:
                self.emit({"event": "node_down", "index": child.index, "peer_id": child.peer_id,
                           "role": child.role, "code": child.returncode})

    def _on_child_line(self, child: Child, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("event")
        if not isinstance(kind, str):  # a control line (hello, reply, ...): to the child's RemoteNode
            if child.control_lines is not None:
                child.control_lines.send_nowait(line + b"\n")
        elif kind == "listening":
            child.peer_id = str(event.get("peer_id", ""))
            child.addrs = [str(a) for a in event.get("addrs", [])]
            child.listening.set()
            if child.index == 0 or not child.argv.count("--bootstrap"):
                self._mark_up(child)
        elif kind == "bootstrapped" and child.listening.is_set():
            self._mark_up(child)
        elif kind == "error" and event.get("fatal"):
            self.emit({"event": "node_error", "index": child.index, "message": event.get("message")})

    def _mark_up(self, child: Child) -> None:
        if child.up.is_set():
            return
        child.up_at = time.monotonic()
        child.up.set()
        self.emit({"event": "node_up", "index": child.index, "peer_id": child.peer_id,
                   "role": child.role, "addrs": child.addrs, "pid": child.pid,
                   "after_s": round(child.up_at - self.started_at, 2)})

    async def wait_all_up(self, timeout: float) -> float:
        """Seconds from the first launch until every node was up and bootstrapped."""
        with trio.fail_after(timeout):
            for child in self.children:
                await child.up.wait()
        return max(c.up_at or 0 for c in self.children) - self.started_at

    # ------------------------------------------------------------------ drive

    async def poll_health(self, timeout: float = POLL_TIMEOUT) -> list[Health]:
        """`health()` of every live node (bounded concurrency; a node that fails or does not
        answer within `timeout` is left out)."""
        out: list[Health] = []
        limiter = trio.CapacityLimiter(POLL_CONCURRENCY)

        async def one(child: Child) -> None:
            async with limiter:
                with trio.move_on_after(timeout):
                    try:
                        child.health = await child.api.health()
                        out.append(child.health)
                    except NodeError:
                        pass

        async with trio.open_nursery() as nursery:
            for child in self.children:
                if child.up.is_set() and child.alive:
                    nursery.start_soon(one, child)
        return out

    def status(self, stats: list[Health]) -> dict[str, Any]:
        up = sum(1 for c in self.children if c.up.is_set() and c.alive)
        return {
            "event": "status",
            "nodes": len(self.children),
            "up": up,
            "exited": sum(1 for c in self.children if c.exited.is_set()),
            "polled": len(stats),
            "connections": summarise([s.connections for s in stats]),
            "dht_size": summarise([s.routing_table_size for s in stats]),
            "rss_mb": summarise([round(s.rss_bytes / 2**20, 1) for s in stats]),
            "elapsed_s": round(time.monotonic() - self.started_at, 1),
        }

    async def kill(self, child: Child) -> None:
        """Kill one node hard (SIGKILL), as a crash would."""
        if child.proc is not None and child.alive:
            child.killed = True
            child.proc.send_signal(signal.SIGKILL)
            with trio.move_on_after(STOP_GRACE):
                await child.exited.wait()

    async def stop_all(self) -> None:
        """SIGTERM every child, SIGKILL what is left after STOP_GRACE seconds."""
        live = [c for c in self.children if c.proc is not None and c.proc.returncode is None]
        for c in live:
            c.killed = True
            try:
                assert c.proc is not None
                c.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        await _wait_all(live, STOP_GRACE)
        for c in live:
            if c.proc.returncode is None:
                try:
                    c.proc.kill()
                except ProcessLookupError:
                    pass
        await _wait_all(live, STOP_GRACE)


async def _wait_all(children: list[Child], timeout: float) -> None:
    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:
            for c in children:
                if c.proc.returncode is None:
                    nursery.start_soon(c.proc.wait)


# ---------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    from punch_net import flag_types as cli_types

    p.add_argument("--nodes", type=cli_types.positive_int, required=True, help="how many node processes")
    p.add_argument("--listeners", type=int, default=0, help="how many of them run the listener role (0)")
    p.add_argument("--torrent-servers", type=int, default=0,
                   help="how many run the torrent-server role (0; needs that role)")
    p.add_argument("--base-port", type=cli_types.port, help="node i listens on BASE+i (default: any free port)")
    p.add_argument("--duration", type=cli_types.positive, help="stop after S seconds (default: until ctrl+c)")
    p.add_argument("--status-interval", type=cli_types.positive, default=None,
                   help="seconds between status lines (default 2, 5 above 100 nodes)")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")


class _Output:
    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            if self.json:
                sys.stdout.write(json.dumps(event, default=str) + "\n")
            else:
                line = self.human(event)
                if line is None:
                    return
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            raise StdoutClosed from None

    @staticmethod
    def human(e: dict[str, Any]) -> str | None:
        kind = e.get("event")
        if kind == "bootstrap":
            return f"bootstrap node up: {e['addr']}\n  others join with: --bootstrap {e['addr']}"
        if kind == "node_up":
            return None  # the status line counts them
        if kind == "node_down":
            return f"! node {e['index']} ({e['role']}) exited with code {e['code']}"
        if kind == "node_error":
            return f"! node {e['index']}: {e['message']}"
        if kind == "status":
            c, d, r = e["connections"], e["dht_size"], e["rss_mb"]
            return (f"[{e['elapsed_s']:7.1f}s] up {e['up']}/{e['nodes']}  "
                    f"conns avg {c['avg']} max {c['max']}  dht avg {d['avg']} min {d['min']}  "
                    f"rss avg {r['avg']} MB")
        if kind == "summary":
            return (f"all {e['nodes']} nodes up in {e['all_up_s']:.1f}s "
                    f"(logs in {e['log_dir']}); ctrl+c stops them")
        if kind == "stopped":
            return f"stopped {e['nodes']} nodes after {e['elapsed_s']:.1f}s; {e['left_running']} left running"
        return None


async def _run_cli(args: argparse.Namespace, out: _Output) -> int:
    net = Testnet(args.nodes, args.listeners, args.torrent_servers, args.base_port, emit=out)
    interval = args.status_interval or (2.0 if args.nodes <= 100 else 5.0)
    code = 0
    async with trio.open_nursery() as nursery:

        async def main() -> None:
            nonlocal code
            try:
                await nursery.start(net.run)
            except (TestnetError, trio.TooSlowError) as exc:
                message = str(exc) or "bootstrap node did not come up"
                out({"event": "error", "message": message, "fatal": True})
                sys.stderr.write(f"punch testnet: error: {message}\n")
                code = 1
                nursery.cancel_scope.cancel()
                return
            announced = False
            while True:
                stats = await net.poll_health()
                out(net.status(stats))
                if not announced and net.all_up_at is not None:
                    announced = True
                    out({"event": "summary", "nodes": len(net.children),
                         "all_up_s": round(net.all_up_at - net.started_at, 2),
                         "bootstrap": net.children[0].dial_addr, "log_dir": str(net.log_dir)})
                await trio.sleep(interval)

        nursery.start_soon(cancel_on_signal, nursery.cancel_scope)
        nursery.start_soon(main)
        if args.duration:
            nursery.start_soon(_stop_after, nursery.cancel_scope, args.duration)
    left = sum(1 for c in net.children if c.proc is not None and c.proc.returncode is None)
    out({"event": "stopped", "nodes": sum(1 for c in net.children if c.proc is not None),
         "left_running": left,
         "elapsed_s": round(time.monotonic() - net.started_at, 1) if net.started_at else 0.0})
    return code


async def _stop_after(scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    scope.cancel()


def main(args: argparse.Namespace) -> int:
    out = _Output(bool(args.json))
    try:
        plan_roles(args.nodes, args.listeners, args.torrent_servers)
        if args.base_port is not None and args.base_port + args.nodes > 65535:
            raise TestnetError(f"--base-port {args.base_port} leaves no room for {args.nodes} ports")
    except TestnetError as exc:
        if args.json:
            out({"event": "error", "message": str(exc), "fatal": True})
        sys.stderr.write(f"punch testnet: error: {exc}\n")
        return EXIT_USAGE
    try:
        try:
            return trio.run(_run_cli, args, out)
        except BaseExceptionGroup as group:  # the nursery has stopped the nodes already
            if isinstance(first_error(group), StdoutClosed):
                raise StdoutClosed from None
            raise
    except StdoutClosed:  # `punch testnet ... | head`: as `punch ROLE` does (cli/main.py)
        detach_stdout()
        return EXIT_STDOUT_CLOSED
    except KeyboardInterrupt:
        return 130


__all__ = ["Child", "Testnet", "TestnetError", "plan_roles", "summarise"]
