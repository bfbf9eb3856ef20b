"""The web console: textual-serve serving `punch-tui --attach SOCKET` to browsers.

Each browser session is its own `punch-tui --attach` process on the node's control
socket (textual-serve starts one per websocket), so the node is never touched by the web
server itself and closing a tab only ends that console.

When a token is set (the node sets one whenever --web-host is given) every request
needs it: `/?token=T` once (it is then kept in an HttpOnly, SameSite=Strict cookie for the
page's assets and websocket); anything else gets 403. Run by the node (punch_net/ops/web.py)
as `python -m punch_tui.web --socket PATH --host H --port P` with PUNCH_WEB_TOKEN set.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import shlex
import signal
import sys
from typing import Any

from aiohttp import web
from textual_serve.server import Server

COOKIE = "punch_token"
TOKEN_ENV = "PUNCH_WEB_TOKEN"


def token_ok(request: web.Request, token: str) -> bool:
    given = request.query.get("token") or request.cookies.get(COOKIE) or ""
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


class PunchWebServer(Server):
    def __init__(self, command: str, host: str, port: int, token: str = "", title: str = "Punch",
                 parent_pid: int | None = None) -> None:
        super().__init__(command, host=host, port=port, title=title)
        self.token = token
        self.parent_pid = parent_pid

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
    args = p.parse_args(argv)
    command = f"{shlex.quote(sys.executable)} -m punch_tui.main --attach {shlex.quote(args.socket)}"
    server = PunchWebServer(command, args.host, args.port, os.environ.get(TOKEN_ENV, ""), args.title,
                            args.parent_pid)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
