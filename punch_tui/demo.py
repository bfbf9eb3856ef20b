"""`make demo`: a small local network and the console on top of it.

Starts a server and two listeners as child `punch` processes on free loopback ports,
then runs `punch-tui --role dialer` against them in this terminal. When the console
exits (or this process is interrupted or fails) every child is stopped by PID.
Child output goes to log files in a temporary directory, printed at the end."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class DemoError(Exception):
    """The local network could not be started; one line for the user."""


class Children:
    """Child processes, each stopped by PID (TERM, then KILL) exactly once."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = log.open("wb") if log is not None else None
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if log else None, stdout=out,
                                    stderr=subprocess.STDOUT if log else None, env=env,
                                    start_new_session=log is not None)
        finally:
            if out is not None:
                out.close()
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)


def wait_listening(log: Path, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT,
                   event: str = "listening") -> dict[str, object]:
    """Poll a child's --json log for its first `event` line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"{log.stem} exited early: {log.read_text(errors='replace')[-300:].strip()}")
        for line in log.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("event") == event:
                return obj
        time.sleep(0.1)
    raise DemoError(f"no '{event}' from {log.name} within {timeout:g}s")


def punch(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "punch_net.cli", role, "--listen-addr", "127.0.0.1", "--port", "0",
            "--ephemeral", "--json", *args]


def run(tui_args: Sequence[str], listeners: int = 2, workdir: Path | None = None) -> int:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="punch-demo-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PUNCH_DATA_DIR": str(workdir / "data")}
    children = Children()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        print("punch demo: starting a server and two listeners on 127.0.0.1 …", flush=True)
        log = workdir / "server.log"
        server = children.start(punch("server"), log, env)
        boot = str(wait_listening(log, server)["addrs"][0])  # type: ignore[index]
        for i in range(listeners):
            llog = workdir / f"listener{i + 1}.log"
            proc = children.start(punch("listener", "--bootstrap", boot), llog, env)
            wait_listening(llog, proc)
        for i in range(listeners):
            wait_listening(workdir / f"listener{i + 1}.log", children.procs[i + 1], event="registered")
        (workdir / "pids").write_text("\n".join(str(p.pid) for p in children.procs) + "\n")
        tui = children.start([sys.executable, "-m", "punch_tui.main", "--role", "dialer", "--listen-addr",
                              "127.0.0.1", "--port", "0", "--ephemeral", "--bootstrap", boot, *tui_args],
                             None, env)
        (workdir / "pids").write_text("\n".join(str(p.pid) for p in children.procs) + "\n")
        code = tui.wait()
    except DemoError as exc:
        sys.stderr.write(f"punch demo: error: {exc}\n")
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        children.stop_all()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    print(f"punch demo: stopped {len(children.procs)} processes; logs in {workdir}", flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m punch_tui.demo",
                                     description="start a local Punch network and open punch-tui on it")
    parser.add_argument("--listeners", type=int, default=2, choices=range(1, 9), metavar="N",
                        help="listeners to start (1-8, default 2)")
    parser.add_argument("--workdir", type=Path, help="where logs and the pid file go (default: a temp dir)")
    parser.add_argument("tui_args", nargs=argparse.REMAINDER, help="extra punch-tui flags (after --)")
    args = parser.parse_args(argv)
    extra = [a for a in args.tui_args if a != "--"]
    return run(extra, args.listeners, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
