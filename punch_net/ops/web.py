"""`--web-port`: serve this node's console in a browser.

The node starts `python -m punch_tui.web` (textual-serve) as a child process; every
browser session there runs `punch-tui --attach` on this node's control socket. punch_net
only starts the process: it never imports the UI.

Bound to 127.0.0.1 unless --web-host is given; then a random token is required (printed
at start in the URL, and in the `web` event). The child dies with the node.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.api import NodeError
from punch_net.config import NodeConfig

START_TIMEOUT = 30.0
STOP_GRACE = 3.0


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host if host not in ("0.0.0.0", "::") else "127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


async def serve(config: NodeConfig, control_path: Path | None, publish: Callable[[ev.Event], None], *,
                task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the web console for the node whose control socket is `control_path` (what
    `control.serve` started with) until cancelled; `publish` gets WebServing and, if the
    child dies, an ErrorEvent. Uses `config.web_host`, `config.web_port`, `config.role`."""
    cfg = config
    if control_path is None:
        raise NodeError("--web-port needs the control socket (drop --no-control)")
    path = control_path
    host, port = cfg.web_host or "127.0.0.1", int(cfg.web_port or 0)
    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
    elif _accepts(host, port):
        raise NodeError(f"web console: {host}:{port} is already in use")
    # Loopback by default needs no token; an explicit --web-host (even 127.0.0.1) does.
    token = "" if cfg.web_host is None else secrets.token_urlsafe(18)
    env = {**os.environ, "PUNCH_WEB_TOKEN": token}
    # The child watches our pid and exits when we are gone, even after a SIGKILL (PDEATHSIG
    # would fire when trio's spawning thread ends, not when the node does).
    argv = [sys.executable, "-m", "punch_tui.web", "--socket", str(path), "--host", host, "--port", str(port),
            "--title", f"Punch {cfg.role}", "--parent-pid", str(os.getpid())]
    proc = await trio.lowlevel.open_process(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, start_new_session=True)
    stderr_tail: list[bytes] = []

    async def drain() -> None:
        assert proc.stderr is not None
        async for chunk in proc.stderr:
            stderr_tail.append(chunk)
            del stderr_tail[:-20]

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            with trio.move_on_after(START_TIMEOUT) as waited:
                while not _accepts(host, port):
                    if proc.poll() is not None:
                        break
                    await trio.sleep(0.1)
            if proc.poll() is not None or waited.cancelled_caught:
                lines = b"".join(stderr_tail).decode(errors="replace").strip().splitlines()
                why = lines[-1] if lines else f"exit code {proc.returncode}"
                raise NodeError(f"web console did not start on {host}:{port}: {why}")
            shown = host if ":" not in host else f"[{host}]"
            url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
            publish(ev.WebServing(url=url, token=token))
            task_status.started(url)
            await proc.wait()
            lines = b"".join(stderr_tail).decode(errors="replace").strip().splitlines()
            publish(ev.ErrorEvent(message=f"web console stopped: {lines[-1] if lines else proc.returncode}",
                                           where="web"))
            nursery.cancel_scope.cancel()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_GRACE):
                await proc.wait()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
