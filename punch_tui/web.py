"""The web console: textual-serve serving `punch-tui --attach SOCKET` to browsers.

Each browser session is its own `punch-tui --attach` process on the node's control
socket (textual-serve starts one per websocket), so the node is never touched by the web
server itself and closing a tab only ends that console. A session's console ends with its
websocket, with this server (`--web-session`: PR_SET_PDEATHSIG, see punch_tui/lifecycle.py)
and with the node (it does not retry a closed control socket); this server ends every
session's console left when it stops, and stops when the node is gone.

When a token is set (the node always sets one) every request needs it: `/?token=T` once
(it is then kept in an HttpOnly, SameSite=Strict cookie for the page's assets and
websocket); anything else gets 403. Run by the node (punch_net/ops/web.py) as
`python -m punch_tui.web --socket PATH --host H --port P --fd N` (N: the listening socket
the node bound) with PUNCH_WEB_TOKEN set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
import shlex
import signal
import socket
import sys
from typing import Any

import psutil
from aiohttp import web
from textual_serve.server import Server

COOKIE = "punch_token"
TOKEN_ENV = "PUNCH_WEB_TOKEN"
SESSION_GRACE = 2.0  # seconds a session's console gets to exit after SIGTERM, then SIGKILL
SHUTDOWN_TIMEOUT = 3.0


def token_ok(request: web.Request, token: str) -> bool:
    given = request.query.get("token") or request.cookies.get(COOKIE) or ""
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


class PunchWebServer(Server):
    def __init__(self, command: str, host: str, port: int, token: str = "", title: str = "Punch",
                 parent_pid: int | None = None, sock: socket.socket | None = None) -> None:
        super().__init__(command, host=host, port=port, title=title)
        self.token = token
        self.parent_pid = parent_pid
        self.sock = sock

    def serve(self, debug: bool = False) -> None:
        """textual-serve's serve(), on the socket the node bound when it gave one."""
        if self.sock is None:
            super().serve(debug)
            return
        self.debug = debug
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.add_signal_handler(signal.SIGINT, self.request_exit)
        loop.add_signal_handler(signal.SIGTERM, self.request_exit)
        web.run_app(self._make_app(), sock=self.sock, handle_signals=False, loop=loop,
                    shutdown_timeout=SHUTDOWN_TIMEOUT, print=lambda *args: None)

    async def on_shutdown(self, app: web.Application) -> None:
        await asyncio.to_thread(end_sessions)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        if self.token:
            token = self.token

            @web.middleware
            async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
                if not token_ok(request, token):
                    return web.Response(status=403, text="403: wrong or missing token (use the URL the node "
                                                         "printed at start)\n")
                response = await handler(request)
                if request.query.get("token") and isinstance(response, web.Response | web.StreamResponse):
                    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
                return response

            app.middlewares.append(guard)
        return app

    async def handle_index(self, request: web.Request) -> Any:
        # Links and the websocket URL follow the address the browser used (not the bind address).
        self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)

    async def on_startup(self, app: web.Application) -> None:
        sys.stdout.write(f"serving on {self.host}:{self.port}\n")
        sys.stdout.flush()
        if self.parent_pid is not None:
            app["punch_watch_parent"] = asyncio.get_running_loop().create_task(self._watch_parent())

    async def _watch_parent(self) -> None:
        """Exit when the node that started us is gone (it may have been SIGKILLed)."""
        while os.getppid() == self.parent_pid:
            await asyncio.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # textual-serve's graceful exit path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="punch_tui.web", description=__doc__)
    p.add_argument("--socket", required=True, help="the node's control socket")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--title", default="Punch")
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    p.add_argument("--fd", type=int, help="serve on this listening socket (inherited) instead of binding")
    args = p.parse_args(argv)
    # exec: the console is our child (not a shell's), so its PR_SET_PDEATHSIG follows us
    command = (f"exec {shlex.quote(sys.executable)} -m punch_tui.main --attach {shlex.quote(args.socket)} "
               f"--web-session {os.getpid()}")
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    server = PunchWebServer(command, args.host, args.port, os.environ.get(TOKEN_ENV, ""), args.title,
                            args.parent_pid, sock)
    try:
        server.serve()
    finally:
        end_sessions()
    return 0


def end_sessions(grace: float = SESSION_GRACE) -> None:
    """SIGTERM every browser session's console still running (our descendants), SIGKILL
    those left after `grace` seconds."""
    import time

    kids = psutil.Process().children(recursive=True)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            kid.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(k) for k in kids):
        time.sleep(0.05)
    for kid in kids:
        if _running(kid):
            with contextlib.suppress(psutil.Error):
                kid.kill()


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an exited child not yet reaped by asyncio counts as gone)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


if __name__ == "__main__":
    sys.exit(main())
