"""torrent-client as a process: --timeout whatever the providers do, the exit after
`complete`, SIGKILL-and-resume re-fetching no verified piece, and the live progress line
on a terminal. Real `punch` processes on 127.0.0.1 (misbehaving servers from
tests/support/torrent_test_peers.py)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from term_screen import render
from torrent_net import TorrentNet as Net
from torrent_net import torrent_net

from punch_net.torrent import PIECE_LENGTH

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with torrent_net(tmp_path_factory.mktemp("torrent-client")) as n:
        yield n


def test_timeout_with_only_a_stalling_provider(net: Net) -> None:
    """The provider answers the metainfo, then sends nothing: exit 1 with an `error` soon
    after --timeout (the bound is loose: the machine is shared)."""
    stall, info_hash = net.share("stall.bin", os.urandom(4 * 1024 * 1024), mode="stall")
    try:
        client = net.download(info_hash, net.root / "dl-stall", "--timeout", "5", name="client-stall")
        assert client.wait_exit(5 + 25) == 1, client.describe()
        elapsed = time.monotonic() - client.started_at
        err = client.wait_event("error", timeout=5)
        assert "no piece" in err["message"] and "5s" in err["message"], err
        assert elapsed < 5 + 15, elapsed
        assert client.find_events("connected", lambda e: e["peer_id"] == stall.peer_id)
    finally:
        stall.kill()  # its worker thread sleeps: SIGTERM would wait for it


def test_timeout_with_a_provider_frozen_mid_download(net: Net) -> None:
    """An honest (slow) server is SIGSTOPped mid-download: its connection stays open and
    silent. The client gives up --timeout after the last piece, with exit 1 and an error."""
    data = os.urandom(24 * 1024 * 1024)
    slow, info_hash = net.share("frozen.bin", data, mode="slow")
    dest = net.root / "dl-frozen"
    client = net.download(info_hash, dest, "--timeout", "5", name="client-frozen")
    try:
        client.wait_event("progress", timeout=60, pred=lambda e: e["have"] > 0)
        os.kill(slow.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        assert client.wait_exit(5 + 25) == 1, client.describe()
        waited = time.monotonic() - frozen_at
        err = client.wait_event("error", timeout=5)
        assert "no piece" in err["message"], err
        assert 4.0 < waited < 5 + 15, waited
        assert (dest / "frozen.bin.part").exists() and not (dest / "frozen.bin").exists()
    finally:
        os.kill(slow.pid, signal.SIGCONT)
        slow.kill()


def test_timeout_with_a_provider_frozen_before_start(net: Net) -> None:
    """The only provider is SIGSTOPped before the client starts: its kernel accepts the TCP
    connection, nothing answers. Exit 1 with an `error` soon after --timeout."""
    frozen, info_hash = net.share("cold.bin", os.urandom(1024 * 1024))
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        client = net.download(info_hash, net.root / "dl-cold", "--timeout", "5", name="client-cold")
        assert client.wait_exit(5 + 25) == 1, client.describe()
        assert time.monotonic() - client.started_at < 5 + 15
        err = client.wait_event("error", timeout=5)
        assert info_hash in err["message"] and "5s" in err["message"], err
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        frozen.kill()


def test_sigkill_and_resume_refetches_no_verified_piece(net: Net) -> None:
    """Kill -9 mid-download (from one slow server, so no endgame duplicates), then resume:
    every piece that was on disk and whole at the kill is kept, and only the others are
    downloaded again (the resume record alone is written once a second: ~50 pieces here)."""
    data = os.urandom(16 * 1024 * 1024)
    total = len(data) // PIECE_LENGTH
    slow, info_hash = net.share("k.bin", data, mode="slow")
    dest = net.root / "dl-kill"
    first = net.download(info_hash, dest, name="client-killed")
    first.wait_event("progress", timeout=120, pred=lambda e: e["have"] >= total // 3)
    # --json progress carries each peer's rate (here the one server's, towards us).
    rates = first.wait_event("progress", timeout=10, pred=lambda e: e["down_by_peer"].get(slow.peer_id, 0) > 0)
    assert rates["up_by_peer"] == {} and set(rates["down_by_peer"]) == {slow.peer_id}, rates
    time.sleep(0.3)  # mid-way between two records
    first.kill()
    part = (dest / "k.bin.part").read_bytes()
    whole = {i for i in range(total)
             if hashlib.sha256(part[i * PIECE_LENGTH:(i + 1) * PIECE_LENGTH]).digest()
             == hashlib.sha256(data[i * PIECE_LENGTH:(i + 1) * PIECE_LENGTH]).digest()}
    assert total // 3 <= len(whole) < total
    second = net.download(info_hash, dest, name="client-resumed")
    assert second.wait_exit(120) == 0, second.describe() + "\n--- the server:\n" + slow.describe(40)
    done = second.wait_event("complete")
    got = hashlib.sha256((dest / "k.bin").read_bytes()).hexdigest()
    assert done["sha256"] == hashlib.sha256(data).hexdigest() == got
    # A kill between a piece's write and its log entry loses that one piece at most.
    assert done["resumed"] >= len(whole) - 1, (done["resumed"], len(whole))
    fetched = done["downloaded"] // PIECE_LENGTH
    assert fetched <= total - len(whole) + 1, (fetched, total - len(whole))
    assert not (dest / "k.bin.part.log").exists() and not (dest / "k.bin.part.resume").exists()
    slow.stop()


def test_exit_soon_after_complete_with_no_seed(net: Net) -> None:
    """Measured ~0.12 s from the `complete` line to the exit (was ~0.5-0.9 s); asserted loosely."""
    server, info_hash = net.share("quick.bin", os.urandom(8 * 1024 * 1024))
    gaps = []
    for run in range(2):
        dest = net.root / f"dl-quick-{run}"
        client = net.download(info_hash, dest, name=f"client-quick-{run}")
        assert client.wait_exit(60) == 0, client.describe()
        exited = time.monotonic()
        done = client.wait_event("complete")
        gaps.append(exited - done["_t"])
    assert min(gaps) < 1.0, gaps
    server.stop()


def _run_on_pty(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """Run `argv` with stdout and stderr on one pty (a terminal 160 columns wide)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the pty
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
    return code, bytes(out)


def test_progress_line_on_a_terminal_is_never_broken_into(net: Net) -> None:
    """Human mode on a terminal: status lines (connected, bootstrapped, complete) appear
    above the live progress line, each on its own line, and the bar's line holds nothing
    else. Before, status lines went to stdout through another console and landed inside
    the bar's line."""
    _, info_hash = net.share("tty.bin", os.urandom(6 * 1024 * 1024), mode="slow")
    dest = net.root / "dl-tty"
    dest.mkdir()
    argv = [sys.executable, "-m", "punch_net.cli", "torrent-client", "--bootstrap", net.boot.addr,
            "--info-hash", info_hash, "--download-dir", str(dest), "--no-seed", "--timeout", "60",
            "--listen-addr", "127.0.0.1", "--port", "0", "--ephemeral"]
    env = {**os.environ, **net.f.env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    env.pop("NO_COLOR", None)
    code, out = _run_on_pty(argv, env, timeout=120)
    lines = render(out)
    text = "\n".join(lines)
    assert code == 0, text
    bars = [line for line in lines if "━" in line]
    assert len(bars) == 1, text  # one progress line, redrawn in place
    bar = bars[0]
    assert bar.startswith("tty.bin ") and bar.rstrip().endswith("complete") and "100%" in bar, bar
    for marker in ("✓", "CONNECTED", "bootstrapped", "Registered", "control socket"):
        assert marker not in bar, bar
    status = [i for i, line in enumerate(lines) if "CONNECTED to peer" in line]
    assert status and all(lines[i].startswith("✓ CONNECTED") for i in status), text
    # The last status line, `complete`, comes after the finished bar, on its own line.
    at = lines.index(bar)
    assert any(line.startswith("✓ complete: ") for line in lines[at + 1:]), text
    # Something was printed while the bar was live (the bar starts at "finding"): the
    # connections to the server come after the DHT lookup, so they were printed above it.
    assert b"finding" in out and out.index(b"finding") < out.rindex(b"CONNECTED"), text


def test_progress_line_when_not_a_terminal(net: Net) -> None:
    """stdout and stderr into one file (no terminal): nothing is drawn while downloading,
    and the final progress line is a line of its own (it used to end without a newline,
    so the next status line was glued to it)."""
    _, info_hash = net.share("file.bin", os.urandom(2 * 1024 * 1024))
    dest = net.root / "dl-file"
    dest.mkdir()
    log = net.root / "client-output.txt"
    argv = [sys.executable, "-m", "punch_net.cli", "torrent-client", "--bootstrap", net.boot.addr,
            "--info-hash", info_hash, "--download-dir", str(dest), "--no-seed", "--timeout", "60",
            "--listen-addr", "127.0.0.1", "--port", "0", "--ephemeral"]
    with log.open("w") as out:
        code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **net.f.env}, timeout=120).returncode
    text = log.read_text()
    assert code == 0, text
    bars = [line for line in text.splitlines() if "━" in line]
    assert len(bars) == 1 and bars[0].startswith("file.bin ") and bars[0].endswith("complete"), text
    # the finished line says where the file came from and its average rate (it said "0 peers"
    # and the last poll's rate: the peers had gone by then)
    assert " from 1 peer " in bars[0] and "/s" in bars[0], bars[0]
    assert any(line.startswith("✓ complete: ") for line in text.splitlines()), text
