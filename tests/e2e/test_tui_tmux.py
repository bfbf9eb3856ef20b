"""punch-tui in a real terminal: tmux (80x24) drives it with send-keys and reads the
screen with capture-pane. Also `make demo`'s script: quitting the console stops every
child process. Skipped when tmux is not installed (`make system-deps` installs it)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_net import Child, Network

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (make system-deps)")


class Tmux:
    """One private tmux server (own socket) with one 80x24 session."""

    def __init__(self, name: str) -> None:
        self.sock = f"punch-test-{os.getpid()}-{name}"

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args], capture_output=True,
                              text=True, timeout=20, check=check)

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self.tmux("new-session", "-d", "-x", "80", "-y", "24", "-s", "t", f"env {exports} {command}")

    def screen(self) -> str:
        res = self.tmux("capture-pane", "-p", "-t", "t", check=False)
        return res.stdout

    def keys(self, *keys: str) -> None:
        for k in keys:
            self.tmux("send-keys", "-t", "t", k)
            time.sleep(0.15)

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", "t", check=False).returncode == 0

    def wait_for(self, text: str, timeout: float = 45.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} not on screen within {timeout:g}s; screen:\n{screen}")

    def wait_gone(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout:g}s; screen:\n{self.screen()}")
            time.sleep(0.2)

    def kill(self) -> None:
        self.tmux("kill-server", check=False)
        tmpdir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (tmpdir / self.sock).unlink(missing_ok=True)


@pytest.fixture
def tmux(request: pytest.FixtureRequest) -> Iterator[Tmux]:
    t = Tmux(request.node.name.replace("[", "-").replace("]", ""))
    try:
        yield t
    finally:
        t.kill()


@pytest.mark.parametrize("term", ["xterm-256color", "xterm"])
def test_punch_tui_in_a_real_terminal(network: Network, tmux: Tmux, tmp_path: Path, term: str) -> None:
    done = tmp_path / "exit-code"
    cmd = (f"sh -c '{shlex.quote(sys.executable)} -m punch_tui.main --role listener --listen-addr 127.0.0.1 "
           f"--port 0 --ephemeral --bootstrap {network.server.addr}; echo $? > {done}'")
    tmux.start(cmd, {"TERM": term, "PUNCH_CONFIG": str(tmp_path / "c.toml"), "PUNCH_DATA_DIR": str(tmp_path),
                     "PYTHONPATH": str(REPO)})
    tmux.wait_for("Punch · listener")
    screen = tmux.wait_for("Quit")
    assert "1 Overview" in screen and "6 Relay" in screen and "Quit" in screen
    screen = tmux.wait_for("DHT bootstrapped")
    assert len(screen.splitlines()) <= 24 and max(len(line) for line in screen.splitlines()) <= 80
    tmux.keys("2")
    screen = tmux.wait_for("stale (>1h)")  # the DHT health line ("1 bucket" or "2 buckets")
    assert network.server.peer_id[-12:] in screen
    tmux.keys("?")
    tmux.wait_for("Keys")
    tmux.keys("Escape", "q")
    tmux.wait_gone()
    assert done.read_text().strip() == "0"


def test_filter_text_shows_and_ctrl_c_quits(network: Network, tmux: Tmux, tmp_path: Path) -> None:
    """Issue 15 at 80x24: after `/` the typed text is on screen (the key bar used to cover the
    filter line); `t` saves the theme to the file $PUNCH_CONFIG names; ctrl+c quits (exit 0)."""
    done, cfg = tmp_path / "exit-code", tmp_path / "cfg.toml"
    cmd = (f"sh -c '{shlex.quote(sys.executable)} -m punch_tui.main --role listener --listen-addr 127.0.0.1 "
           f"--port 0 --ephemeral --bootstrap {network.server.addr}; echo $? > {done}'")
    tmux.start(cmd, {"TERM": "xterm-256color", "PUNCH_CONFIG": str(cfg), "PUNCH_DATA_DIR": str(tmp_path / "data"),
                     "PYTHONPATH": str(REPO)})
    tmux.wait_for("DHT bootstrapped")
    tmux.keys("/", "bootstr")
    screen = tmux.wait_for("/ bootstr")
    lines = screen.rstrip("\n").splitlines()
    assert len(lines) == 24 and "/ bootstr" in lines[-2] and "Clear filter" in lines[-1], screen
    assert any("DHT bootstrapped" in line for line in lines[:-2])  # the events narrowed to it, still there
    tmux.keys("Escape")
    deadline = time.monotonic() + 10
    while "/ bootstr" in tmux.screen():
        assert time.monotonic() < deadline, f"the filter bar stayed after esc:\n{tmux.screen()}"
        time.sleep(0.2)
    tmux.keys("t")
    deadline = time.monotonic() + 10
    while not (cfg.is_file() and "[tui]" in cfg.read_text()):
        assert time.monotonic() < deadline and not cfg.is_dir(), f"theme not saved to {cfg}"
        time.sleep(0.2)
    tmux.keys("C-c")
    tmux.wait_gone()
    assert done.read_text().strip() == "0"


def test_demo_quit_stops_every_child(tmux: Tmux, tmp_path: Path) -> None:
    work = tmp_path / "demo"
    work.mkdir()
    tmux.start(f"{shlex.quote(sys.executable)} -m punch_tui.demo --workdir {work}",
               {"TERM": "xterm-256color", "PUNCH_CONFIG": str(tmp_path / "c.toml"), "PYTHONPATH": str(REPO)})
    tmux.wait_for("Punch · dialer", timeout=60)
    tmux.keys("4")
    tmux.wait_for("REPLY", timeout=45)  # the dialer found a listener and got an answer
    pids = [int(p) for p in (work / "pids").read_text().split()]
    assert len(pids) == 4  # server, two listeners, the console
    tmux.keys("q")
    tmux.wait_gone()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        os.kill(pid, 9)
        raise AssertionError(f"child {pid} still running after the demo quit")


def test_attach_shows_traffic_and_messages_from_before(tmux: Tmux, tmp_path: Path) -> None:
    """`punch-tui --attach` on a headless listener that a dialer already talked to: the
    Overview shows non-zero traffic and the Messages tab the messages received before
    the console came (the node's event backlog, replayed)."""
    env = {"PUNCH_CONFIG": str(tmp_path / "config.toml")}
    started: list[Child] = []

    def start(role: str, name: str, *args: str) -> Child:
        child = Child(role, *args, cwd=tmp_path, env={**env, "PUNCH_DATA_DIR": str(tmp_path / name)})
        started.append(child)
        return child

    try:
        server = start("server", "server")
        listener = start("listener", "listener", "--bootstrap", server.addr, "--namespace", "tui-attach")
        sock = str(listener.wait("control")["path"])
        listener.wait("registered")
        dialer = start("dialer", "dialer", "--bootstrap", server.addr, "--namespace", "tui-attach", "--count", "2",
                       "--interval", "0.2", "--message", "hello-before-attach", "--timeout", "30")
        assert dialer.proc.wait(45) == 0, dialer.events[-5:]
        received = [e for e in listener.events if e.get("event") == "message_received"]
        assert len(received) >= 2, listener.events[-5:]

        done = tmp_path / "exit-code"
        tmux.start(f"sh -c '{shlex.quote(sys.executable)} -m punch_tui.main --attach {shlex.quote(sock)}; "
                   f"echo $? > {done}'", {"TERM": "xterm-256color", **env, "PYTHONPATH": str(REPO)})
        tmux.wait_for("Punch · listener · attached")
        screen = tmux.wait_for("Traffic")
        deadline = time.monotonic() + 20
        while not re.search(r"Traffic\s+in [1-9][\d.]* \w*B · out [1-9]", screen):  # counters from the node
            assert time.monotonic() < deadline, f"no traffic on the Overview:\n{screen}"
            time.sleep(0.3)
            screen = tmux.screen()
        tmux.keys("4")
        screen = tmux.wait_for("hello-before-attach Message #2")
        assert "← RECV …" in screen and "hello-before-attach Message #1" in screen
        tmux.keys("q")
        tmux.wait_gone()
        assert done.read_text().strip() == "0"
        assert listener.proc.poll() is None  # quitting an attached console leaves the node running
    finally:
        for child in reversed(started):
            child.stop()
