"""The web console: this node's console in a browser.

The node starts `python -m punch_tui.web` (textual-serve) as a child process; every
browser session there runs `punch-tui --attach` on this node's control socket. punch_net
only starts the process: it never imports the UI.

On for the monitor by default (127.0.0.1:8080, the seed's dashboard port), off for the
other roles unless `--web-port` is given; `--web-port 0` turns it off. Every request
needs the random token printed at start in the URL (the `web` event), on loopback too.
Binding to another interface (`--web-host`) is explicit and announced with a warning
(`web_exposed`). The node binds the listening socket itself and hands it to the child,
so a busy default port falls back to a free one (and says so) without a race against
another node starting at the same moment. The child dies with the node.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.api import NodeError
from punch_net.config import NodeConfig

START_TIMEOUT = 30.0
STOP_GRACE = 3.0
DEFAULT_WEB_PORT = 8080
WEB_BY_DEFAULT = frozenset({"monitor"})  # roles that serve the web console unless --web-port 0
READY_LINE = b"serving on "  # what the child prints once it accepts requests


@dataclass(frozen=True)
class WebPlan:
    host: str
    port: int
    fallback: bool  # the port is the role's default: when busy, take a free one instead
    exposed: bool  # bound beyond this machine's loopback


def plan(cfg: NodeConfig) -> WebPlan | None:
    """Where this node's web console goes; None when it is off."""
    if cfg.web_port is None:
        if cfg.role not in WEB_BY_DEFAULT:
            return None
        port, fallback = DEFAULT_WEB_PORT, True
    elif cfg.web_port == 0:
        return None
    else:
        port, fallback = cfg.web_port, False
    host = cfg.web_host or "127.0.0.1"
    return WebPlan(host, port, fallback, not is_loopback(host))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError when taken or not ours to bind)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # a restart reuses its port while old connections sit in TIME_WAIT; a listener stays exclusive
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def bind_planned(where: WebPlan) -> tuple[socket.socket, int]:
    """The listening socket for `where` and the port it got; a busy default port gives a
    free one. Raises NodeError (one line) when nothing can be bound."""
    try:
        sock = listen(where.host, where.port)
    except OSError as exc:
        if not (where.fallback and exc.errno == errno.EADDRINUSE):
            raise NodeError(f"web console: cannot listen on {where.host}:{where.port}: "
                            f"{exc.strerror or exc}") from None
        try:
            sock = listen(where.host, 0)
        except OSError as again:
            raise NodeError(f"web console: cannot listen on {where.host}: {again.strerror or again}") from None
    return sock, int(sock.getsockname()[1])


async def serve(config: NodeConfig, control_path: Path | None, publish: Callable[[ev.Event], None], *,
                task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the web console for the node whose control socket is `control_path` (what
    `control.serve` started with) until cancelled; `publish` gets WebExposed (bound beyond
    loopback), WebServing and, if the child dies, an ErrorEvent. Uses `config.web_host`,
    `config.web_port`, `config.role` (see `plan`)."""
    cfg = config
    where = plan(cfg)
    if where is None:
        task_status.started("")
        return
    if control_path is None:
        raise NodeError("--web-port needs the control socket (drop --no-control)")
    sock, port = bind_planned(where)
    host = where.host
    token = secrets.token_urlsafe(18)
    env = {**os.environ, "PUNCH_WEB_TOKEN": token}
    # The child watches our pid and exits when we are gone, even after a SIGKILL (PDEATHSIG
    # would fire when trio's spawning thread ends, not when the node does).
    argv = [sys.executable, "-m", "punch_tui.web", "--socket", str(control_path), "--host", host,
            "--port", str(port), "--fd", str(sock.fileno()), "--title", f"Punch {cfg.role}",
            "--parent-pid", str(os.getpid())]
    try:
        proc = await trio.lowlevel.open_process(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, start_new_session=True,
                                                pass_fds=(sock.fileno(),))
    finally:
        sock.close()  # the child holds it now
    tail: list[bytes] = []
    ready = trio.Event()

    async def drain(stream: trio.abc.ReceiveStream | None, watch: bool) -> None:
        assert stream is not None
        seen = b""
        async for chunk in stream:
            tail.append(chunk)
            del tail[:-20]
            if watch and not ready.is_set():
                seen = (seen + chunk)[-4096:]
                if READY_LINE in seen:
                    ready.set()

    def last_words() -> str:
        lines = b"".join(tail).decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {proc.returncode}"

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, proc.stdout, True)
            nursery.start_soon(drain, proc.stderr, False)
            with trio.move_on_after(START_TIMEOUT):
                async with trio.open_nursery() as waiting:
                    async def exited() -> None:
                        await proc.wait()
                        waiting.cancel_scope.cancel()

                    waiting.start_soon(exited)
                    await ready.wait()
                    waiting.cancel_scope.cancel()
            if not ready.is_set():
                raise NodeError(f"web console did not start on {host}:{port}: {last_words()}")
            shown = host if ":" not in host else f"[{host.strip('[]')}]"
            url = f"http://{shown}:{port}/?token={token}"
            if where.exposed:
                publish(ev.WebExposed(host=host, port=port))
            publish(ev.WebServing(url=url, token=token, busy_port=where.port if port != where.port else 0))
            task_status.started(url)
            await proc.wait()
            publish(ev.ErrorEvent(message=f"web console stopped: {last_words()}", where="web"))
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await end_group(proc)


async def end_group(proc: trio.Process) -> None:
    """SIGTERM the child's process group (the web server and every browser session's
    console), SIGKILL whatever is left of it after STOP_GRACE."""
    pgid = proc.pid  # the child leads its own session (start_new_session)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with trio.move_on_after(STOP_GRACE):
        await proc.wait()
        while group_alive(pgid):
            await trio.sleep(0.05)
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    await proc.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
