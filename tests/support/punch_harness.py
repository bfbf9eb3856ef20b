"""Shared test fixtures: real `punch` processes on 127.0.0.1, driven through `--json`.

`PunchProcess` starts `python -m punch_net.cli ROLE --listen-addr 127.0.0.1 --port 0
--json ...` as a child process, reads its JSON events from stdout on a background
thread, and offers bounded waits for them (a blocking `wait_event` for plain tests, an
`await aevent` that polls without blocking trio for tests that also run libp2p hosts in
process). Every process started through the `punch` fixture is killed by PID at teardown,
whatever the test did.

    def test_something(punch):
        server = punch.start("server")
        listener = punch.start("listener", "--bootstrap", server.addr)
        listener.wait_event("registered")

Timeouts are generous on purpose: the suite asserts correctness, not speed (other test
runs share the 2-core machine). Speed is measured in `benchmarks/`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

EVENT_TIMEOUT = 60.0  # default seconds to wait for one event (generous: CI machines get busy)
STOP_TIMEOUT = 10.0  # seconds a process gets to exit after SIGTERM before SIGKILL
REPO = Path(__file__).resolve().parents[2]

EventPredicate = Callable[[dict[str, Any]], bool]


def die_with_parent() -> None:
    """Child side of Popen: get SIGKILL when the test process dies, even by SIGKILL or a
    CI timeout, when fixtures never get to clean up (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


class PunchExited(AssertionError):
    """The process ended while a test was waiting for one of its events."""


class PunchProcess:
    """One `punch ROLE ... --json` child process and the events it has printed.

    `events` holds every JSON object read from stdout so far (in order); `noise` holds
    stdout lines that were not JSON; `stderr_text()` returns what it wrote on stderr.
    Node flags (`--listen-addr 127.0.0.1 --port 0 --ephemeral --json`) are added unless
    `node_flags=False` (for `punch config ...` or bad-flag tests) or overridden by
    `args` (`--port`, `--data-dir`/`--identity` replace the defaults).
    """

    def __init__(
        self,
        role: str,
        *args: str,
        node_flags: bool = True,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        name: str = "",
    ) -> None:
        self.role = role
        self.name = name or role
        self.argv = self.build_argv(role, args, node_flags)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.events: list[dict[str, Any]] = []
        self.noise: list[str] = []
        self._stderr: list[str] = []
        self._lock = threading.Condition()
        self._eof = False
        self.proc: subprocess.Popen[str] | None = None
        self.started_at = 0.0

    @staticmethod
    def build_argv(role: str, args: Sequence[str], node_flags: bool) -> list[str]:
        argv = [sys.executable, "-m", "punch_net.cli", role]
        if node_flags:
            given = set(args)
            if "--listen-addr" not in given:
                argv += ["--listen-addr", "127.0.0.1"]
            if "--port" not in given:
                argv += ["--port", "0"]
            if not given & {"--data-dir", "--identity", "--ephemeral"}:
                argv.append("--ephemeral")
            if "--json" not in given:
                argv.append("--json")
        return argv + list(args)

    # ------------------------------------------------------------- lifecycle

    def start(self) -> PunchProcess:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # a ctrl+c on the test run does not hit children twice
            preexec_fn=die_with_parent,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = EVENT_TIMEOUT) -> int:
        """Wait for the process to end on its own; returns its exit code."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:g}s\n{self.describe()}") from None
        self._wait_eof(2.0)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig` (SIGTERM by default), wait, SIGKILL if it will not go. Returns the code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._wait_eof(2.0)
        assert self.proc.returncode is not None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (a crash, as far as peers can tell)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(5)

    # ------------------------------------------------------------- output

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            with self._lock:
                if isinstance(obj, dict):
                    obj.setdefault("_t", time.monotonic())  # when the test saw it
                    self.events.append(obj)
                else:
                    self.noise.append(line)
                self._lock.notify_all()
        with self._lock:
            self._eof = True
            self._lock.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self._stderr.append(line)

    def _wait_eof(self, timeout: float) -> None:
        with self._lock:
            self._lock.wait_for(lambda: self._eof, timeout)

    def stderr_text(self) -> str:
        with self._lock:
            return "".join(self._stderr)

    def describe(self, last: int = 15) -> str:
        """The tail of what the process said, for assertion messages."""
        with self._lock:
            evs = [json.dumps({k: v for k, v in e.items() if k != "_t"})[:300] for e in self.events[-last:]]
            return (
                f"--- {self.name} argv: {' '.join(self.argv[2:])}\n--- events:\n" + "\n".join(evs)
                + f"\n--- stdout noise: {self.noise[-5:]}\n--- stderr:\n{''.join(self._stderr)[-2000:]}"
            )

    # ------------------------------------------------------------- events

    def find_events(self, kind: str, pred: EventPredicate | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == kind and (pred is None or pred(e))]

    def _match_from(self, kind: str, pred: EventPredicate | None, start: int) -> tuple[dict[str, Any] | None, int]:
        for i in range(start, len(self.events)):
            e = self.events[i]
            if e.get("event") == kind and (pred is None or pred(e)):
                return e, i
        return None, len(self.events)

    def wait_event(
        self, kind: str, timeout: float = EVENT_TIMEOUT, pred: EventPredicate | None = None, *,
        after: int = 0,
    ) -> dict[str, Any]:
        """Block until an event of `kind` (matching `pred`, at index >= `after`) has been
        printed; fail with the process's output if it does not come or the process ends."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found, _ = self._match_from(kind, pred, after)
                if found is not None:
                    return found
                if self._eof:
                    raise PunchExited(f"{self.name} exited (code {self.proc and self.proc.poll()}) before "
                                      f"{kind!r}\n{self.describe()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind!r} event from {self.name} within {timeout:g}s\n"
                                         f"{self.describe()}")
                self._lock.wait(min(left, 0.5))

    async def aevent(
        self, kind: str, timeout: float = EVENT_TIMEOUT, pred: EventPredicate | None = None, *,
        after: int = 0,
    ) -> dict[str, Any]:
        """`wait_event` for trio tests: polls, so in-process libp2p hosts keep running."""
        import trio

        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found, _ = self._match_from(kind, pred, after)
                eof = self._eof
            if found is not None:
                return found
            if eof:
                raise PunchExited(f"{self.name} exited before {kind!r}\n{self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind!r} event from {self.name} within {timeout:g}s\n{self.describe()}")
            await trio.sleep(0.02)

    def mark(self) -> int:
        """Index to pass as `after=` to wait only for events printed from now on."""
        with self._lock:
            return len(self.events)

    # ------------------------------------------------------------- identity

    def listening(self, timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
        return self.wait_event("listening", timeout)

    @property
    def peer_id(self) -> str:
        return str(self.listening()["peer_id"])

    @property
    def addr(self) -> str:
        """The first advertised multiaddr, with /p2p/<id>."""
        return str(self.listening()["addrs"][0])

    @property
    def port(self) -> int:
        return int(self.addr.split("/tcp/")[1].split("/")[0])

    @property
    def addr_without_id(self) -> str:
        return self.addr.split("/p2p/")[0]


class PunchFactory:
    """Starts `PunchProcess`es and stops every one of them (by PID) at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[PunchProcess] = []
        # Keep children away from the user's real data and config directories.
        self.env = {"PUNCH_DATA_DIR": str(tmp_path / "data"), "PUNCH_CONFIG": str(tmp_path / "config.toml")}

    def start(self, role: str, *args: str, node_flags: bool = True, name: str = "",
              env: dict[str, str] | None = None) -> PunchProcess:
        proc = PunchProcess(role, *args, node_flags=node_flags, env={**self.env, **(env or {})},
                            cwd=self.tmp_path, name=name)
        self.procs.append(proc)
        return proc.start()

    def server(self, *args: str, name: str = "server") -> PunchProcess:
        """A server, waited for until it listens."""
        proc = self.start("server", *args, name=name)
        proc.listening()
        return proc

    def listener(self, server: PunchProcess | str, *args: str, name: str = "listener",
                 registered: bool = True) -> PunchProcess:
        """A listener bootstrapped to `server`, waited for until it registered (by default)."""
        boot = server if isinstance(server, str) else server.addr
        proc = self.start("listener", "--bootstrap", boot, *args, name=name)
        if registered:
            proc.wait_event("registered")
        return proc

    def run(self, *argv: str, timeout: float = 60.0, node_flags: bool = False) -> subprocess.CompletedProcess[str]:
        """Run `punch ARGV...` to completion (for one-shot commands and bad-input checks)."""
        cmd = PunchProcess.build_argv(argv[0], argv[1:], node_flags) if argv else [sys.executable, "-m",
                                                                                    "punch_net.cli"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.tmp_path,
                              env={**os.environ, **self.env}, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop(signal.SIGTERM, timeout=5)
            except Exception:
                proc.kill()


@pytest.fixture
def punch(tmp_path: Path) -> Iterator[PunchFactory]:
    """Factory for real `punch` processes; all are stopped at teardown."""
    factory = PunchFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def punch_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PunchFactory]:
    """Like `punch`, but its processes live for the whole test module."""
    factory = PunchFactory(tmp_path_factory.mktemp("punch-module"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def shared_server(punch_module: PunchFactory) -> PunchProcess:
    """One bootstrap server for a whole module (saves a process start per test). Tests
    that use it must pick their own `--namespace`, and must not stop it."""
    return punch_module.server(name="shared-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for fixed-port restarts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Does anything accept TCP connections on host:port right now?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def dead_port() -> int:
    """A port where nothing listens: connections are refused at once."""
    return free_port()


class SilentPeer:
    """A plain TCP socket that accepts connections and never says a word (nor closes)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_peer() -> Iterator[SilentPeer]:
    peer = SilentPeer()
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
def free_tcp_port() -> int:
    return free_port()


# ---------------------------------------------------------------------------------------------
# In-process py-libp2p hosts, for tests that must speak raw protocols to a node (garbage, stalled
# streams) or show a py-libp2p bug next to its workaround.


@asynccontextmanager
async def libp2p_host(dial_timeout: float = 5.0, *, plain: bool = False) -> AsyncIterator[IHost]:
    """A py-libp2p host listening on 127.0.0.1 (any port), closed on exit.

    `plain=True` builds it with py-libp2p's defaults (no Punch dial deadlines), to show bugs."""
    import multiaddr
    from libp2p import new_host

    from punch_net.p2p.host import build_host
    from punch_net.p2p.identity import new_identity

    key = new_identity()
    host = new_host(key_pair=key) if plain else build_host(key, dial_timeout)
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        try:
            yield host
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await host.close()


def peer_info_of(addr: str) -> PeerInfo:
    """`/ip4/.../tcp/N/p2p/ID` -> PeerInfo for `host.connect`."""
    from libp2p.peer.peerinfo import info_from_p2p_addr

    return info_from_p2p_addr(multiaddr_of(addr))


async def silent_port(nursery: trio.Nursery) -> Any:
    """A 127.0.0.1 TCP port that accepts connections and never says a byte (a peer whose
    handshake hangs until the dialer's deadline), served in `nursery`; its multiaddr."""
    import functools

    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
    return multiaddr_of(f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}")


def multiaddr_of(addr: str) -> Any:
    import multiaddr

    return multiaddr.Multiaddr(addr)


def host_addr(host: IHost) -> str:
    """A host's first listen address with /p2p/ (py-libp2p's get_addrs already appends it)."""
    return str(host.get_addrs()[0])


async def kad_find_node(host: IHost, peer: ID, timeout: float = 5.0, key: ID | None = None) -> list[ID]:
    """One honest Kademlia FIND_NODE request (for `key`, default ourselves) on a fresh
    `/ipfs/kad/1.0.0` stream.

    Returns the closer peers the server answered with; raises if the stream is reset or
    no answer comes within `timeout`."""
    from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from libp2p.peer.id import ID as PeerID
    from libp2p.utils.varint import read_varint_prefixed_bytes_limited

    from punch_net.messaging.codec import encode_uvarint

    with trio.fail_after(timeout):
        stream = await host.new_stream(peer, [KAD_PROTOCOL])
        try:
            msg = Message()
            msg.type = Message.MessageType.FIND_NODE
            msg.key = (key or host.get_id()).to_bytes()
            data = msg.SerializeToString()
            await stream.write(encode_uvarint(len(data)) + data)
            reply = Message()
            reply.ParseFromString(await read_varint_prefixed_bytes_limited(stream, 1 << 20))
        finally:
            await stream.close()
    return [PeerID(p.id) for p in reply.closerPeers]


async def open_stalled_streams(host: IHost, peer: ID, protocol: str, count: int) -> list[INetStream]:
    """Open `count` streams of `protocol` to `peer` and never write on them (a slow-loris)."""
    streams = []
    for _ in range(count):
        with trio.fail_after(10):
            try:
                streams.append(await host.new_stream(peer, [protocol]))  # type: ignore[list-item]
            except Exception:
                break  # the server may refuse beyond its per-peer cap
    return streams
