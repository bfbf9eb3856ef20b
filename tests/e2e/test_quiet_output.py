"""examples/hello_p2p.py says what it did and nothing of py-libp2p's inner failures, even
when the DHT still names a listener that quit (issue #15.7). Real processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from punch_harness import REPO, PunchFactory

pytestmark = pytest.mark.slow

NOISE = ("Traceback", "Failed to open", "negative cache", "ADDCONN_FAIL", "Cancelled", "libp2p", "WARNING", "ERROR")

# the same example, in an app that logs at DEBUG: py-libp2p's lines are there, marked
DEBUG_RUN = """
import logging, runpy, sys
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s")
sys.argv = ["hello_p2p.py", *sys.argv[1:]]
runpy.run_path({path!r}, run_name="__main__")
"""


def test_hello_p2p_prints_only_its_own_lines(punch: PunchFactory) -> None:
    server = punch.server()
    gone = punch.listener(server, "--namespace", "my-app", name="gone")
    gone.kill()  # its provider record stays in the DHT: the example will dial a dead address
    alive = punch.listener(server, "--namespace", "my-app", name="alive")
    args = ["--bootstrap", server.addr_without_id, "--namespace", "my-app"]
    done = subprocess.run([sys.executable, str(REPO / "examples" / "hello_p2p.py"), *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"connected to {alive.peer_id}" and lines[1].startswith("reply: ") and len(lines) == 3
    assert done.stderr == "", done.stderr
    for word in NOISE:
        assert word not in done.stdout, done.stdout

    # Not hidden for an app that wants them: at DEBUG, py-libp2p's failed dial of the listener
    # that quit is there (which also shows the run above met that failure and kept quiet).
    debug = subprocess.run([sys.executable, "-c", DEBUG_RUN.format(path=str(REPO / "examples" / "hello_p2p.py")),
                            *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert debug.returncode == 0, debug.stderr[-3000:]
    assert "DEBUG libp2p.transport.tcp.tcp (py-libp2p error) Failed to open TCP stream" in debug.stderr, \
        debug.stderr[-3000:]


def test_a_dialer_says_once_that_a_listener_quit(punch: PunchFactory) -> None:
    """The DHT names a listener that quit at every lookup (every 5 s): the dialer says so
    once, not at every lookup (it said it 11 times in 2 minutes)."""
    import time

    server = punch.server()
    gone = punch.listener(server, "--namespace", "t-gone", name="gone")
    gone_id = gone.peer_id
    gone.kill()
    alive = punch.listener(server, "--namespace", "t-gone", name="alive")
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--namespace", "t-gone", "--interval", "0.5")
    dialer.wait_event("reply", 60, lambda e: e["peer_id"] == alive.peer_id)
    first = dialer.wait_event("error", 60, lambda e: e.get("peer_id") == gone_id)
    lookups = dialer.mark()
    time.sleep(16)  # three more lookups (one every 5 s), each naming the listener that quit
    assert dialer.alive()
    about_gone = dialer.find_events("error", lambda e: e.get("peer_id") == gone_id)
    assert about_gone == [first], dialer.describe()
    assert first["repeats"] == 1 and first["where"] == "discovery"
    dialer.wait_event("reply", 30, lambda e: e["peer_id"] == alive.peer_id, after=lookups)  # still working


def test_a_message_with_markup_does_not_take_a_human_mode_listener_down(punch: PunchFactory) -> None:
    """The human output is Rich markup: a peer's "[/x]" ended the listener (MarkupError)."""
    import time

    server = punch.server()
    listener = punch.start("listener", "--listen-addr", "127.0.0.1", "--port", "0", "--ephemeral",
                           "--bootstrap", server.addr, "--namespace", "t-markup", node_flags=False,
                           name="human-listener")
    deadline = time.monotonic() + 60
    while not any("Registered in DHT" in line for line in listener.noise):
        assert listener.alive() and time.monotonic() < deadline, listener.describe()
        time.sleep(0.2)
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--namespace", "t-markup", "--count", "2",
                         "--interval", "0.3", "--message", "hi [/oops] [bold]", "--timeout", "60")
    assert dialer.wait_exit(90) == 0, dialer.describe()
    deadline = time.monotonic() + 10
    while not [line for line in listener.noise if "hi [/oops] [bold] Message #2" in line]:
        assert time.monotonic() < deadline, listener.describe()
        time.sleep(0.2)
    assert listener.alive() and "Traceback" not in listener.stderr_text(), listener.describe()
