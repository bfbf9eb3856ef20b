"""How a console process ends, whatever ends it.

- SIGTERM exits the app the way `q` does (the node stops, or the attached console
  detaches); if that has not finished within a grace period (3 s attached, 10 s with its own
  node; a stuck stop, an output pipe nobody reads), the process ends anyway: a console must
  never outlive a SIGTERM.
- A web session's console (`punch-tui --attach ... --web-session PID`, started by
  `punch_tui.web` for one browser session) also gets SIGTERM when that web server is gone:
  at once on Linux (PR_SET_PDEATHSIG), within a second elsewhere (a poll of the parent pid).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TypeVar

from textual.app import App

R = TypeVar("R")

TERM_GRACE = 3.0  # an attached console has nothing to save
TERM_GRACE_LOCAL = 10.0  # the console's own node stops (bounded at 5 s by the app) and saves its state
PR_SET_PDEATHSIG = 1


def exit_on_sigterm(app: App[R], grace: float = TERM_GRACE) -> None:
    """Call from the running app (on_mount); a headless app (Pilot tests) is left alone."""
    if app.is_headless:
        return
    loop = asyncio.get_running_loop()
    armed: list[threading.Timer] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        # A Python-level handler, not loop.add_signal_handler: it runs even while the main
        # thread is blocked writing to a pipe nobody reads (the write is retried after EINTR),
        # and the deadline's thread then ends the process if the loop never comes back.
        if not armed:
            armed.append(threading.Timer(grace, os._exit, args=(128 + signal.SIGTERM,)))
            armed[0].daemon = True
            armed[0].start()
        loop.call_soon_threadsafe(app.exit)

    signal.signal(signal.SIGTERM, on_term)


def end_with_parent(parent_pid: int) -> None:
    """SIGTERM ourselves when `parent_pid` (our parent, the web server) is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # gone already (before the prctl), or not our parent at all
        raise SystemExit(f"punch-tui: error: the web server (pid {parent_pid}) that started this console is gone")

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
