"""Attach to a running node: `punch-tui --attach` in tmux, and the web view in headless
Chromium (driven over the DevTools protocol), both on a real `punch listener` process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from monitor_helpers import PunchFactory, free_port

from punch_tui.format import short_id

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Tmux:
    """A private tmux server with one 120x30 session running one command."""

    def __init__(self, name: str) -> None:
        self.sock = f"punch-attach-{os.getpid()}-{name}"

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args], capture_output=True, text=True,
                              timeout=20, check=check)

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self.tmux("new-session", "-d", "-x", "120", "-y", "30", "-s", "t", f"env {exports} {command}")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t", check=False).stdout

    def keys(self, *keys: str) -> None:
        for k in keys:
            self.tmux("send-keys", "-t", "t", k)
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", "t", check=False).returncode == 0

    def wait_for(self, text: str, timeout: float = 60.0, gone: bool = False) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if (text in screen) != gone:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} {'still' if gone else 'not'} on screen within {timeout:g}s:\n{screen}")

    def wait_exit(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"console still running after {timeout:g}s:\n{self.screen()}")
            time.sleep(0.2)

    def kill(self) -> None:
        self.tmux("kill-server", check=False)


@pytest.fixture
def tmux_pair() -> Iterator[tuple[Tmux, Tmux]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed (make system-deps)")
    pair = (Tmux("one"), Tmux("two"))
    try:
        yield pair
    finally:
        for t in pair:
            t.kill()


def attach_command(sock: Path) -> str:
    return f"{shlex.quote(sys.executable)} -m punch_tui.main --attach {shlex.quote(str(sock))}"


def test_attach_in_tmux(punch: PunchFactory, tmux_pair: tuple[Tmux, Tmux], tmp_path: Path) -> None:
    server = punch.server()
    sock = tmp_path / "listener.sock"
    data = tmp_path / "listener-data"
    listener_args = ("--bootstrap", server.addr, "--control-socket", str(sock), "--data-dir", str(data))
    listener = punch.start("listener", *listener_args)
    listener.wait_event("registered")
    env = {"TERM": "xterm-256color", "COLORTERM": "truecolor", "PUNCH_DATA_DIR": str(tmp_path / "data"),
           "PUNCH_CONFIG": str(tmp_path / "config.toml"), "PYTHONPATH": str(REPO)}
    one, two = tmux_pair
    one.start(attach_command(sock), env)
    two.start(attach_command(sock), env)  # two consoles on one node at once
    server_tail = short_id(server.peer_id, 12)
    for console in (one, two):
        console.wait_for("Punch · listener")
        console.keys("3")  # Connections
        console.wait_for(server_tail)
    screen = one.screen()
    assert "1 Overview" in screen and "3 Connections" in screen

    one.keys("q")
    one.wait_exit()
    assert listener.alive(), "quitting an attached console must leave the node running"
    two.wait_for(server_tail)

    listener.stop()  # the node goes away: the console says so and keeps trying
    two.wait_for("disconnected, retrying", 30)
    assert two.alive()
    again = punch.start("listener", *listener_args, name="listener-again")
    again.wait_event("registered")
    two.wait_for("disconnected, retrying", 60, gone=True)
    two.wait_for(server_tail, 60)
    two.keys("q")
    two.wait_exit()
    assert again.alive()


def test_attach_without_a_node_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "punch_tui.main", "--attach", str(tmp_path / "nope.sock")],
                         capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "no control socket" in res.stderr, res.stderr


# ------------------------------------------------------------------ several nodes, one data dir

@pytest.fixture
def shared_dir(punch: PunchFactory, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A server and a listener sharing one data dir: two live control sockets there."""
    data = tmp_path / "shared-data"
    server = punch.start("server", "--data-dir", str(data))
    server_sock = Path(server.wait_event("control")["path"])
    listener = punch.start("listener", "--bootstrap", server.addr, "--data-dir", str(data))
    listener_sock = Path(listener.wait_event("control")["path"])
    assert server_sock != listener_sock and {server_sock.parent, listener_sock.parent} == {data}
    return data, {"server": (server, server_sock), "listener": (listener, listener_sock)}


def test_attach_with_two_nodes_in_a_data_dir_lists_them(shared_dir: tuple[Path, dict[str, Any]]) -> None:
    from punch_tui.attach import AttachError, ask, live_nodes, resolve_socket

    data, nodes = shared_dir
    (server, server_sock), (listener, listener_sock) = nodes["server"], nodes["listener"]
    found = {n.role: n for n in live_nodes(data)}
    assert set(found) == {"server", "listener"}
    assert found["listener"].path == listener_sock and found["listener"].pid == listener.pid
    assert found["server"].peer_id == server.peer_id

    # no choice and no terminal: the list (role, peer id, pid, path) and exit 2
    res = subprocess.run([sys.executable, "-m", "punch_tui.main", "--attach", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert "2 nodes run in" in lines[0] and "--attach ROLE" in lines[0], res.stderr
    assert len(lines) == 3, res.stderr
    for role, (proc, sock) in nodes.items():
        row = next(line for line in lines[1:] if line.split()[0] == role)
        assert f"pid {proc.pid}" in row and str(sock) in row and short_id(proc.peer_id, 8) in row, row

    # a role picks that node; a data dir picks nothing silently
    assert resolve_socket("listener", data) == listener_sock
    assert resolve_socket("server", data) == server_sock
    assert resolve_socket(str(listener_sock), data) == listener_sock
    with pytest.raises(AttachError, match="no running dialer"):
        resolve_socket("dialer", data)
    with pytest.raises(AttachError, match="2 nodes run"):
        resolve_socket(str(data), data.parent / "elsewhere")  # a given data dir wins over the default
    import io

    out = io.StringIO()
    assert resolve_socket(None, data, ask(io.StringIO("listener\n"), out)) == listener_sock
    assert "attach to [1-2]" in out.getvalue() and str(server_sock) in out.getvalue()
    picked = resolve_socket(None, data, ask(io.StringIO("2\n"), io.StringIO()))
    assert picked == sorted([server_sock, listener_sock])[1]
    with pytest.raises(AttachError, match="no node chosen"):
        resolve_socket(None, data, ask(io.StringIO("7\n"), io.StringIO()))


def test_attach_by_role_and_by_asking_in_tmux(shared_dir: tuple[Path, dict[str, Any]],
                                              tmux_pair: tuple[Tmux, Tmux], tmp_path: Path) -> None:
    data, _nodes = shared_dir
    env = {"TERM": "xterm-256color", "PUNCH_CONFIG": str(tmp_path / "config.toml"), "PYTHONPATH": str(REPO)}
    by_role, asked = tmux_pair
    base = f"{shlex.quote(sys.executable)} -m punch_tui.main --data-dir {shlex.quote(str(data))} --attach"
    by_role.start(f"{base} listener", env)
    by_role.wait_for("Punch · listener · attached")
    asked.start(base, env)  # a terminal: asked before the console starts
    asked.wait_for("attach to [1-2]")
    asked.keys("server", "Enter")
    asked.wait_for("Punch · server · attached")
    for console in (by_role, asked):
        console.keys("q")
        console.wait_exit()


# ------------------------------------------------------------------ web view

async def browse(url: str, shot: Path, want: list[str], timeout: float = 90.0,
                 during: Callable[[], None] | None = None) -> dict[str, Any]:
    """Open `url` in headless Chromium, wait until the terminal received all of `want`,
    screenshot it, run `during()` (in a thread) while the page is still open, close the
    browser; returns what the page showed."""
    import aiohttp

    profile = tempfile.mkdtemp(prefix="punch-chromium-")
    proc = subprocess.Popen(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--window-size=1280,800", "about:blank"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ws_url = ""
        deadline = time.monotonic() + 30
        while not ws_url and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stderr.readline)
            if not line and proc.poll() is not None:
                raise AssertionError("chromium exited before listening")
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            ws_url = m.group(1) if m else ""
        assert ws_url, "chromium did not open its DevTools port"
        port = int(ws_url.split(":")[2].split("/")[0])
        threading_drain(proc)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                page = next(t for t in await resp.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                seq = 0
                frames: list[str] = []  # what the terminal's websocket received (DevTools Network events)

                async def call(method: str, **params: Any) -> dict[str, Any]:
                    nonlocal seq
                    seq += 1
                    mine = seq
                    await ws.send_json({"id": mine, "method": method, "params": params})
                    while True:
                        msg = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                        if msg.get("method") == "Network.webSocketFrameReceived":
                            frame = msg["params"]["response"]
                            data = frame.get("payloadData", "")
                            frames.append(base64.b64decode(data).decode(errors="replace") if frame.get("opcode") == 2
                                          else data)
                        if msg.get("id") == mine:
                            return dict(msg.get("result") or {})

                await call("Page.enable")
                await call("Network.enable")
                await call("Page.navigate", url=url)
                seen: dict[str, Any] = {}
                end = time.monotonic() + timeout
                while time.monotonic() < end:
                    await asyncio.sleep(0.5)
                    res = await call("Runtime.evaluate", returnByValue=True, expression=(
                        "JSON.stringify({started: document.body.classList.contains('-first-byte'),"
                        " closed: document.body.classList.contains('-closed')})"))
                    value = res.get("result", {}).get("value")
                    if not isinstance(value, str):  # the page is still loading (no context yet)
                        continue
                    seen = json.loads(value)
                    seen["text"] = "".join(frames)
                    if seen["started"] and all(w in seen["text"] for w in want):
                        await asyncio.sleep(1.0)  # let the last frame paint
                        break
                png = await call("Page.captureScreenshot", format="png")
                shot.write_bytes(base64.b64decode(png["data"]))
                if during is not None:
                    await asyncio.to_thread(during)
                return seen
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


def threading_drain(proc: subprocess.Popen[str]) -> None:
    import threading

    def drain() -> None:
        assert proc.stderr is not None
        for _ in proc.stderr:
            pass

    threading.Thread(target=drain, daemon=True).start()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make system-deps)")
def test_web_view_in_headless_chromium(punch: PunchFactory, tmp_path: Path) -> None:
    from PIL import Image

    server = punch.server()
    port = free_port()
    listener = punch.start("listener", "--bootstrap", server.addr, "--web-port", str(port), "--web-host", "127.0.0.1")
    web = listener.wait_event("web", 60)
    token = web["token"]
    assert len(token) >= 16 and web["url"] == f"http://127.0.0.1:{port}/?token={token}"
    listener.wait_event("registered")

    # a wrong or missing token is refused, for the page and for the terminal's websocket
    base = f"http://127.0.0.1:{port}"
    assert http_status(f"{base}/") == 403
    assert http_status(f"{base}/?token=wrong") == 403
    assert http_status(f"{base}/ws?token=wrong") == 403
    assert http_status(f"{base}/static/js/textual.js") == 403
    assert http_status(web["url"]) == 200

    shot = tmp_path / "web-console.png"
    seen = asyncio.run(browse(web["url"], shot, ["Overview", "Connections", "listener"]))
    assert seen.get("started") and not seen.get("closed"), seen
    for word in ("Overview", "Connections", "listener"):
        assert word in seen["text"], f"{word!r} never reached the browser"
    # The screenshot shows the console, not textual-serve's splash: Textual's header row and
    # tab bar give the top of the page many colours, the splash is one flat background.
    img = Image.open(shot).convert("RGB")
    assert img.size[0] >= 1000
    top = img.crop((0, 0, img.size[0], 60))
    assert len(set(top.getdata())) > 8, "the top of the page is flat: no console drawn"
    assert listener.alive()

    # every browser session is a `punch-tui --attach` on the node's control socket
    import psutil

    kids = [" ".join(p.cmdline()) for p in psutil.Process(listener.pid).children(recursive=True)]
    assert any("punch_tui.web" in k for k in kids), kids
    bad = asyncio.run(browse(f"{base}/?token=nope", tmp_path / "refused.png", ["Overview"], timeout=3))
    assert "Overview" not in bad.get("text", "")


# ------------------------------------------------------------------ the monitor's web view by default

def our_403(url: str) -> bool:
    """A request without the token is refused by Punch's web view (not some other server)."""
    try:
        with urllib.request.urlopen(url, timeout=15):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 403 and "wrong or missing token" in exc.read().decode(errors="replace")


def port_taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are not "taken"
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_monitor_serves_the_web_view_on_8080_by_default(punch: PunchFactory) -> None:
    """Up on 127.0.0.1:8080 with a token; if 8080 is taken (another monitor, another test
    run), on the free port it says it fell back to, and 8080 really is taken."""
    monitor = punch.start("monitor", "--bootstrap", "/ip4/127.0.0.1/tcp/1")
    web = monitor.wait_event("web", 60)
    token, url = web["token"], web["url"]
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", url)
    assert m and m.group(2) == token and len(token) >= 16, web
    port = int(m.group(1))
    if web["busy_port"]:
        assert web["busy_port"] == 8080 and port != 8080 and port_taken(8080), web
    else:
        assert port == 8080, web
    assert not monitor.find_events("web_exposed")
    base = f"http://127.0.0.1:{port}"
    assert our_403(f"{base}/") and our_403(f"{base}/?token=wrong")
    assert http_status(url) == 200


def test_busy_8080_falls_back_and_says_so(punch: PunchFactory) -> None:
    import socket

    holder = socket.socket()
    # SO_REUSEADDR: the previous test's connections to 8080 may sit in TIME_WAIT, which
    # would fail a plain bind although nobody listens there.
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            holder.bind(("127.0.0.1", 8080))
            holder.listen(1)
        except OSError:
            assert port_taken(8080), "8080 refused our bind but nobody listens there"
        monitor = punch.start("monitor", "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--json")
        web = monitor.wait_event("web", 60)
        port = int(web["url"].split(":")[2].split("/")[0])
        assert web["busy_port"] == 8080 and port != 8080, web
        assert our_403(f"http://127.0.0.1:{port}/") and http_status(web["url"]) == 200
        human = punch.run("monitor", "--listen-addr", "127.0.0.1", "--port", "0", "--ephemeral",
                          "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--web-port", "8080", timeout=60)
        assert human.returncode == 1 and "8080" in human.stderr, human.stderr  # an explicit port does not move
    finally:
        holder.close()


def test_web_view_off_and_exposed(punch: PunchFactory) -> None:
    import psutil

    off = punch.start("monitor", "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--web-port", "0")
    off.wait_event("control", 60)
    listener = punch.start("listener", "--bootstrap", "/ip4/127.0.0.1/tcp/1")  # off unless asked
    listener.wait_event("control", 60)
    port = free_port()
    exposed = punch.start("listener", "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--web-port", str(port),
                          "--web-host", "0.0.0.0")
    warning = exposed.wait_event("web_exposed", 60)
    assert warning["host"] == "0.0.0.0" and warning["port"] == port
    assert exposed.wait_event("web", 60)["url"].startswith(f"http://0.0.0.0:{port}/?token=")
    assert our_403(f"http://127.0.0.1:{port}/")
    time.sleep(2)  # a web view would have been announced by now (the exposed one was)
    for proc in (off, listener):
        assert not proc.find_events("web"), proc.describe()
        kids = [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)]
        assert not any("punch_tui.web" in k for k in kids), kids


# ------------------------------------------------------------------ the web view's processes end

def consoles_under(pid: int) -> list[int]:
    """PIDs of the `punch_tui.main --attach` processes below `pid` (the browser sessions)."""
    import psutil

    found = []
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    for kid in kids:
        try:
            cmd = kid.cmdline()
        except psutil.Error:
            continue
        if "punch_tui.main" in cmd and "--attach" in cmd:
            found.append(kid.pid)
    return found


def web_servers_under(pid: int) -> list[int]:
    import psutil

    found = []
    for kid in psutil.Process(pid).children():
        try:  # a short-lived child (a helper the node ran) may be gone already
            if "punch_tui.web" in " ".join(kid.cmdline()):
                found.append(kid.pid)
        except psutil.Error:
            continue
    return found


def running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(pids: list[int], timeout: float, what: str) -> float:
    """Seconds until none of `pids` runs; fails after `timeout`."""
    start = time.monotonic()
    while any(running(p) for p in pids):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: still running after {timeout:g}s: {[p for p in pids if running(p)]}")
        time.sleep(0.1)
    return time.monotonic() - start


def wait_consoles(parent: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not (found := consoles_under(parent)):
        assert time.monotonic() < deadline, f"no browser-session console under pid {parent}"
        time.sleep(0.2)
    return found


chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make system-deps)")


@chromium
def test_web_sessions_end_with_the_browser_and_the_node(punch: PunchFactory, tmp_path: Path) -> None:
    """#14.7: a browser session's console ends when the tab closes, on SIGTERM, and with
    the node (stopped or killed); nothing is left in the process tree."""
    def start_monitor(name: str) -> tuple[Any, str, int]:
        monitor = punch.start("monitor", "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--web-port", str(free_port()),
                              name=name)
        url = monitor.wait_event("web", 60)["url"]
        return monitor, url, web_servers_under(monitor.pid)[0]

    monitor, url, server_pid = start_monitor("monitor")
    seen: dict[str, list[int]] = {}

    # the tab closes: its console ends
    asyncio.run(browse(url, tmp_path / "a.png", ["Overview"], during=lambda: seen.update(a=wait_consoles(server_pid))))
    wait_gone(seen["a"], 30, "console of a closed tab")

    # SIGTERM to a session's console: it exits promptly, the page shows the session closed
    def term_console() -> None:
        seen["b"] = wait_consoles(server_pid)
        os.kill(seen["b"][0], signal.SIGTERM)
        seen["b_s"] = [wait_gone(seen["b"], 10, "console after SIGTERM")]

    asyncio.run(browse(url, tmp_path / "b.png", ["Overview"], during=term_console))
    assert seen["b_s"][0] < 5.0

    # the node stops (SIGTERM) with a tab open: the web server and the console go with it
    def stop_node() -> None:
        seen["c"] = wait_consoles(server_pid)
        assert monitor.stop() == 0
        wait_gone([server_pid, *seen["c"]], 15, "web processes after the node stopped")

    asyncio.run(browse(url, tmp_path / "c.png", ["Overview"], during=stop_node))

    # the node is killed (SIGKILL): no cleanup code of its own runs, still nothing is left
    killed, url, server_pid = start_monitor("monitor-killed")

    def kill_node() -> None:
        seen["d"] = wait_consoles(server_pid)
        killed.kill()
        wait_gone([server_pid, *seen["d"]], 15, "web processes after the node was killed")

    asyncio.run(browse(url, tmp_path / "d.png", ["Overview"], during=kill_node))


@chromium
def test_web_session_ends_when_its_node_goes_away(punch: PunchFactory, tmp_path: Path) -> None:
    """The web server run by hand (so it outlives the node): when the node is killed, the
    session's console does not keep retrying; it ends, and the web server stays up."""
    sock = tmp_path / "node.sock"
    listener = punch.start("listener", "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--control-socket", str(sock))
    listener.wait_event("control", 60)
    port, token = free_port(), "t" * 24
    server = subprocess.Popen([sys.executable, "-m", "punch_tui.web", "--socket", str(sock), "--port", str(port)],
                              env={**os.environ, "PUNCH_WEB_TOKEN": token}, cwd=REPO, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):  # refused until it listens
                if http_status(f"http://127.0.0.1:{port}/?token={token}") == 200:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "web server did not start"
            time.sleep(0.3)
        seen: dict[str, list[int]] = {}

        def kill_node() -> None:
            seen["consoles"] = wait_consoles(server.pid)
            listener.kill()
            wait_gone(seen["consoles"], 20, "console of a node that is gone")

        asyncio.run(browse(f"http://127.0.0.1:{port}/?token={token}", tmp_path / "gone.png", ["Overview"],
                           during=kill_node))
        assert server.poll() is None, "the web server itself stays up"
        server.terminate()
        assert server.wait(15) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)


def test_sigterm_ends_a_terminal_console_cleanly(punch: PunchFactory, tmux_pair: tuple[Tmux, Tmux],
                                                 tmp_path: Path) -> None:
    """SIGTERM to `punch-tui --attach` in a terminal: it exits like `q` (status 0, the
    terminal restored), not killed by the signal, within a few seconds."""
    sock = tmp_path / "listener.sock"
    listener = punch.start("listener", "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--control-socket", str(sock))
    listener.wait_event("control", 60)
    env = {"TERM": "xterm-256color", "PUNCH_CONFIG": str(tmp_path / "config.toml"), "PYTHONPATH": str(REPO)}
    term, _ = tmux_pair
    term.start(f"{attach_command(sock)}; echo console-exit=$?; sleep 60", env)  # the shell reports how it ended
    term.wait_for("Punch · listener")
    shell = int(term.tmux("display", "-p", "-t", "t", "#{pane_pid}").stdout.strip())
    (pid,) = consoles_under(shell)
    os.kill(pid, signal.SIGTERM)
    took = wait_gone([pid], 10, "terminal console after SIGTERM")
    screen = term.wait_for("console-exit=", 10)
    assert "console-exit=0" in screen, f"not a clean exit (143 = killed by SIGTERM):\n{screen}"
    assert took < 5.0
    assert listener.alive()


def test_sigterm_ends_a_web_console_whose_output_is_not_read(punch: PunchFactory, tmp_path: Path) -> None:
    """The reported hang: a session's console blocked writing to a pipe nobody reads (its
    web server stuck or going away) ignored SIGTERM. Now it ends within the grace period."""
    from punch_tui.lifecycle import TERM_GRACE

    sock = tmp_path / "node.sock"
    listener = punch.start("listener", "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--control-socket", str(sock))
    listener.wait_event("control", 60)
    env = {**os.environ, "TEXTUAL_DRIVER": "textual.drivers.web_driver:WebDriver", "COLUMNS": "200", "ROWS": "60"}
    console = subprocess.Popen([sys.executable, "-m", "punch_tui.main", "--attach", str(sock),
                                "--web-session", str(os.getpid())], env=env, cwd=REPO, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        # wait until it is stuck: asleep in a write to the full pipe (the kernel's wait channel says so)
        wchan = Path(f"/proc/{console.pid}/wchan")
        deadline = time.monotonic() + 60
        while "pipe" not in wchan.read_text():
            assert time.monotonic() < deadline and console.poll() is None, "the console never blocked on its output"
            time.sleep(0.2)
        time.sleep(8)  # and the event loop behind the blocked writer backs up too
        start = time.monotonic()
        console.send_signal(signal.SIGTERM)
        console.wait(TERM_GRACE + 10)
        assert time.monotonic() - start < TERM_GRACE + 3
    finally:
        if console.poll() is None:
            console.kill()
            console.wait(5)
