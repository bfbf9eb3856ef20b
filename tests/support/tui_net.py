"""A small local network of real `punch` child processes for the TUI tests, and helpers
to drive a PunchApp under `App.run_test` (asyncio) while its node runs in guest mode."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from punch_harness import die_with_parent

REPO = Path(__file__).resolve().parents[2]
WAIT = 45.0  # generous: other test runs share the 2-core machine


class Child:
    """`python -m punch_net.cli ROLE ... --json` with its events read on a thread."""

    def __init__(self, role: str, *args: str, cwd: Path, env: dict[str, str],
                 launcher: Sequence[str] = ()) -> None:
        """`launcher` replaces `python -m punch_net.cli` (e.g. a misbehaving peer from
        torrent_test_peers.py, which takes the same arguments)."""
        argv = [*(launcher or (sys.executable, "-m", "punch_net.cli")), role, "--listen-addr", "127.0.0.1",
                "--ephemeral", "--json", *args]
        if "--port" not in args:
            argv += ["--port", "0"]
        # stderr to a file: when a child dies early, the failure says why
        self.stderr_path = cwd / f"{role}-{len(list(cwd.glob(f'{role}-*.stderr')))}.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, cwd=cwd,
                                     env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                                     start_new_session=True, preexec_fn=die_with_parent)
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(obj)
                self._cond.notify_all()

    def wait(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.get("event") == kind:
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = self.stderr_path.read_text(errors="replace")[-1500:]
                    raise AssertionError(f"no {kind!r} from {self.proc.args} (exit {self.proc.poll()}, "
                                         f"events: {self.events[-5:]}, stderr: {tail!r})")
                self._cond.wait(min(left, 0.5))

    @property
    def peer_id(self) -> str:
        return str(self.wait("listening")["peer_id"])

    @property
    def addr(self) -> str:
        return str(self.wait("listening")["addrs"][0])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._stderr.close()


class Network:
    """A server and two listeners on 127.0.0.1 (announced under `namespace`)."""

    def __init__(self, tmp: Path, namespace: str = "tui-test") -> None:
        self.tmp = tmp
        self.namespace = namespace
        self.env = {"PUNCH_DATA_DIR": str(tmp / "data"), "PUNCH_CONFIG": str(tmp / "config.toml")}
        self.children: list[Child] = []
        try:
            self.server = self.start("server")
            self.server.wait("listening")
            self.listeners = [self.start("listener", "--bootstrap", self.server.addr, "--namespace", namespace)
                              for _ in range(2)]
            for listener in self.listeners:
                listener.wait("registered")
        except BaseException:
            self.close()  # a half-started network must not outlive the test run
            raise

    def start(self, role: str, *args: str) -> Child:
        child = Child(role, *args, cwd=self.tmp, env=self.env)
        self.children.append(child)
        return child

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()


def free_port(low: int = 20000, high: int = 60000) -> int:
    """A free loopback port with five digits (so masked screenshots keep their layout)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if low <= port < high:
            return port
    raise RuntimeError("no free five-digit port")


async def wait_until(pilot: Any, cond: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
    """Poll `cond` between pilot pauses (the node keeps running in guest mode meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or cond}")
        await pilot.pause(0.2)


async def open_palette(pilot: Any, app: Any) -> None:
    """ctrl+p, then wait until the command palette is the screen (typing goes to it)."""
    from textual.command import CommandPalette

    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), timeout=20, what="the command palette")


async def wait_palette_hit(pilot: Any, app: Any, needle: str, timeout: float = 20.0) -> None:
    """Until the palette's highlighted hit mentions `needle` (its search for what was typed
    has finished), so that "enter" chooses that hit and not one for a shorter prefix."""
    from textual.command import CommandList

    def highlighted() -> str:
        try:
            hits = app.screen.query_one(CommandList)
        except Exception:
            return ""
        if hits.highlighted is None or hits.highlighted >= hits.option_count:
            return ""
        option = hits.get_option_at_index(hits.highlighted)
        return f"{getattr(getattr(option, 'hit', None), 'text', '')} {option.prompt}"

    await wait_until(pilot, lambda: needle in highlighted(), timeout=timeout, what=f"a palette hit with {needle!r}")


def make_app(tmp: Path, role: str = "listener", bootstrap: list[str] | None = None, namespace: str = "tui-test",
             port: int = 0, theme: str = "punch-dark", poll: float = 0.5, key_pair: Any = None,
             **cfg: Any) -> Any:
    from punch_net.config import NodeConfig
    from punch_tui.app import PunchApp
    from punch_tui.themes import load_themes

    config = NodeConfig(role=role, listen_addr="127.0.0.1", port=port, bootstrap=bootstrap or [],
                        namespace=namespace, ephemeral=True, data_dir=tmp / "data", **cfg)
    themes, errors = load_themes()
    assert not errors, errors
    return PunchApp(config, key_pair=key_pair, theme_name=theme, themes=themes, config_path=tmp / "config.toml",
                    poll_interval=poll)


def screen_text(app: Any) -> str:
    """The visible screen as plain text (from the SVG export's text, good enough for 'in')."""
    import html
    import re

    svg = app.export_screenshot()
    parts = re.findall(r"<text[^>]*>(.*?)</text>", svg)
    return html.unescape("".join(parts)).replace("\xa0", " ")
