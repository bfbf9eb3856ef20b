"""A `punch ROLE ... --json` child process whose events a thread collects: the torrent
benchmarks' one helper (torrent_bench.py, torrent_cpu_ab.py, torrent_fixed_costs.py).

    boot = PunchProc("server", env=env)
    addr = boot.wait("listening")["addrs"][0]

Every process listens on 127.0.0.1, any port, with a fresh key. `events` holds
(monotonic time read, event) pairs in order; `on_event` is a subclass's hook, called on the
reader thread as each event arrives (torrent_cpu_ab.py reads /proc CPU counters there).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PY = sys.executable
NODE_FLAGS = ("--listen-addr", "127.0.0.1", "--port", "0", "--ephemeral", "--json")

Event = dict[str, Any]


class PunchProc:
    """One punch process. `cmd` replaces `python -m punch_net.cli` (e.g. a profiler's wrapper)."""

    wait_timeout = 120.0  # default seconds for wait()

    def __init__(self, *argv: str, env: dict[str, str], cmd: Sequence[str] = (PY, "-m", "punch_net.cli"),
                 cwd: str | Path | None = None) -> None:
        self.events: list[tuple[float, Event]] = []
        self.cv = threading.Condition()
        self.eof = False  # stdout has ended: no event will come any more
        self.started = time.monotonic()
        self.p = subprocess.Popen([*cmd, *argv, *NODE_FLAGS], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=env, cwd=cwd)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def on_event(self, event: Event) -> None:
        """Called on the reader thread for each event, before a waiter can see it."""

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            read_at = time.monotonic()
            self.on_event(event)
            with self.cv:
                self.events.append((read_at, event))
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def wait_timed(self, kind: str, timeout: float | None = None,
                   pred: Callable[[Event], bool] = lambda e: True) -> tuple[float, Event]:
        """The first `kind` event that `pred` accepts, with the time it was read. Leaves the
        script (SystemExit) when none came within `timeout` or the process's output ended."""
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        with self.cv:
            while True:
                for read_at, event in self.events:
                    if event.get("event") == kind and pred(event):
                        return read_at, event
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    last = [e for _, e in self.events[-3:]]
                    raise SystemExit(f"no {kind!r} event (rc={self.p.poll()}); last: {last}")
                self.cv.wait(min(left, 0.5))

    def wait(self, kind: str, timeout: float | None = None,
             pred: Callable[[Event], bool] = lambda e: True) -> Event:
        return self.wait_timed(kind, timeout, pred)[1]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not gone within 10 s."""
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


def first_block_at(proc: PunchProc, part: Path, timeout: float = 300.0) -> float:
    """Monotonic time `part` (a download's NAME.part) first held a block on disk, polled
    every 2 ms; 0.0 if the process ended or `timeout` passed first."""
    deadline = time.monotonic() + timeout
    while proc.p.poll() is None and time.monotonic() < deadline:
        try:
            if part.stat().st_blocks > 0:
                return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    return 0.0
