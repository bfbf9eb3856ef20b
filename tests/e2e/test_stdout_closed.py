"""`punch ROLE [--json] | head -1` and `punch testnet ... | head -1`: when stdout's reader goes
away, `punch` stops its node(s) the structured way and exits 141 (128 + SIGPIPE), with no
traceback. Real processes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from punch_harness import EVENT_TIMEOUT, PunchFactory, PunchProcess, die_with_parent

pytestmark = pytest.mark.slow

EXIT_STDOUT_CLOSED = 141


def read_line(fd: int, timeout: float) -> bytes:
    """The first line written on `fd`, read byte by byte (nothing more is taken from the pipe)."""
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"no line within {timeout:g}s: {line!r}"
        byte = os.read(fd, 1)
        assert byte, f"stdout ended before a line: {line!r}"
        line += byte
    return line


def wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not made within {timeout:g}s"
        time.sleep(0.05)


def start(argv: list[str], stderr_path: Path) -> subprocess.Popen[bytes]:
    """`argv` with stdout a pipe of the test's (read with read_line) and stderr to a file."""
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                preexec_fn=die_with_parent)


def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(EVENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"punch still running {EVENT_TIMEOUT:g}s after its stdout closed") from None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "human"])
def test_closed_stdout_stops_punch_cleanly(punch: PunchFactory, tmp_path: Path, free_tcp_port: int,
                                           json_mode: bool) -> None:
    data_dir = tmp_path / "server"
    args = ["--port", str(free_tcp_port), "--data-dir", str(data_dir), *(["--json"] if json_mode else [])]
    argv = PunchProcess.build_argv("server", args, node_flags=True)
    if not json_mode:
        argv.remove("--json")  # build_argv adds it unless given
    stderr_path = tmp_path / "stderr.txt"
    proc = start(argv, stderr_path)
    try:
        assert proc.stdout is not None
        first = read_line(proc.stdout.fileno(), EVENT_TIMEOUT)
        assert first.startswith(b'{"event": "listening"' if json_mode else b"=== Punch server ==="), first
        wait_for(data_dir / "control.sock", EVENT_TIMEOUT)  # the node is up, its socket made
        proc.stdout.close()  # the reader goes away, like `head -1` after its line
        # The server may have printed all it had to say already; a peer that connects makes it
        # print again, into the closed pipe.
        punch.listener(f"/ip4/127.0.0.1/tcp/{free_tcp_port}", registered=False)
        code = wait_exit(proc)
        err = stderr_path.read_text(errors="replace")
        assert "Traceback" not in err, err
        assert code == EXIT_STDOUT_CLOSED, (code, err)
        # the node stopped the structured way: its control socket is removed on the way out
        assert not (data_dir / "control.sock").exists()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_closed_stdout_stops_a_testnet_and_its_nodes(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "punch_net.cli", "testnet", "--nodes", "2", "--json", "--status-interval", "0.5",
            "--duration", str(4 * EVENT_TIMEOUT)]
    stderr_path = tmp_path / "stderr.txt"
    proc = start(argv, stderr_path)
    node_pid = 0
    try:
        assert proc.stdout is not None
        first = json.loads(read_line(proc.stdout.fileno(), EVENT_TIMEOUT))
        assert first["event"] == "node_up", first
        node_pid = int(first["pid"])
        proc.stdout.close()  # a status line follows every 0.5 s: the next one finds no reader
        code = wait_exit(proc)
        err = stderr_path.read_text(errors="replace")
        assert "Traceback" not in err, err
        assert code == EXIT_STDOUT_CLOSED, (code, err)
        deadline = time.monotonic() + 10  # stopped by the testnet before it exited, then reaped
        while alive(node_pid):
            assert time.monotonic() < deadline, f"node {node_pid} still running after the testnet exited"
            time.sleep(0.05)
    finally:
        for pid in (proc.pid, node_pid):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
