"""`punch ROLE [--json] | head -1`: when stdout's reader goes away, `punch` stops its node the
structured way and exits 141 (128 + SIGPIPE), with no traceback. Real processes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
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


@pytest.mark.parametrize("json_mode", [True, False], ids=["json", "human"])
def test_closed_stdout_stops_punch_cleanly(punch: PunchFactory, tmp_path: Path, free_tcp_port: int,
                                           json_mode: bool) -> None:
    data_dir = tmp_path / "server"
    args = ["--port", str(free_tcp_port), "--data-dir", str(data_dir), *(["--json"] if json_mode else [])]
    argv = PunchProcess.build_argv("server", args, node_flags=True)
    if not json_mode:
        argv.remove("--json")  # build_argv adds it unless given
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                preexec_fn=die_with_parent)
    try:
        assert proc.stdout is not None
        first = read_line(proc.stdout.fileno(), EVENT_TIMEOUT)
        assert first.startswith(b'{"event": "listening"' if json_mode else b"=== Punch server ==="), first
        wait_for(data_dir / "control.sock", EVENT_TIMEOUT)  # the node is up, its socket made
        proc.stdout.close()  # the reader goes away, like `head -1` after its line
        # The server may have printed all it had to say already; a peer that connects makes it
        # print again, into the closed pipe.
        punch.listener(f"/ip4/127.0.0.1/tcp/{free_tcp_port}", registered=False)
        try:
            code = proc.wait(EVENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"punch still running {EVENT_TIMEOUT:g}s after its stdout closed") from None
        err = stderr_path.read_text(errors="replace")
        assert "Traceback" not in err, err
        assert code == EXIT_STDOUT_CLOSED, (code, err)
        # the node stopped the structured way: its control socket is removed on the way out
        assert not (data_dir / "control.sock").exists()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
