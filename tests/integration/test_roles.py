"""The three roles as separate `punch` processes on 127.0.0.1, talking only through the DHT."""

from __future__ import annotations

import os
import signal
import stat
import time
import tomllib
from pathlib import Path

import pytest
from conftest import PunchFactory, dead_port, free_port, port_accepts

pytestmark = pytest.mark.slow

EVENT_KINDS_DIALER = {"listening", "bootstrapped", "discovered", "connected", "message_sent", "reply"}


def test_dialer_finds_listener_through_the_dht(punch: PunchFactory) -> None:
    server = punch.server()
    listener = punch.listener(server)
    # The dialer knows only the server: the listener's address must come from the DHT.
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--count", "3", "--interval", "0.2",
                         "--timeout", "60")
    assert dialer.wait_exit(90) == 0, dialer.describe()

    kinds = {e["event"] for e in dialer.events}
    assert EVENT_KINDS_DIALER <= kinds, dialer.describe()
    assert {"listening", "bootstrapped", "registered", "connected", "message_received"} <= {
        e["event"] for e in listener.events}, listener.describe()
    found = dialer.find_events("discovered", lambda e: e["peer_id"] == listener.peer_id)
    assert found and found[0]["namespace"] == "simple-chat"
    assert any(a.startswith("/ip4/127.0.0.1/") for a in found[0]["addrs"])
    replies = dialer.find_events("reply", lambda e: e["peer_id"] == listener.peer_id and e["ok"])
    assert len(replies) >= 3
    assert replies[0]["result"]["echo"] == "Hello from dialer! Message #1"
    assert replies[0]["result"]["by"] == listener.peer_id
    got = listener.wait_event("message_received", pred=lambda e: e["args"]["text"].endswith("#3"))
    assert got["peer_id"] == dialer.peer_id and got["command"] == "message"
    # Listening addresses are real ones, never the unspecified address.
    assert all("/0.0.0.0/" not in a for e in (server, listener, dialer) for a in e.listening()["addrs"])
    assert not dialer.stderr_text().strip(), dialer.stderr_text()


def test_two_listeners_one_dialer(punch: PunchFactory) -> None:
    server = punch.server()
    one = punch.listener(server, name="listener-1")
    two = punch.listener(server, name="listener-2")
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--interval", "0.3")
    for listener in (one, two):
        got = listener.wait_event("message_received", 60, lambda e: e["peer_id"] == dialer.peer_id)
        assert got["args"]["text"].startswith("Hello from dialer! Message #")
    for listener in (one, two):
        dialer.wait_event("reply", 30, lambda e, p=listener.peer_id: e["peer_id"] == p and e["ok"])
    assert dialer.stop(signal.SIGINT) == 0
    assert one.alive() and two.alive()


def test_bootstrap_without_peer_id(punch: PunchFactory) -> None:
    """Users type `/ip4/HOST/tcp/PORT` without /p2p/: the peer id is learned on dial."""
    server = punch.server()
    bare = server.addr_without_id
    assert "/p2p/" not in bare
    listener = punch.listener(bare)
    boot = listener.wait_event("bootstrapped")
    assert boot["peers"] == [server.peer_id]
    dialer = punch.start("dialer", "--bootstrap", bare, "--count", "1", "--timeout", "60")
    assert dialer.wait_exit(90) == 0, dialer.describe()


def test_two_bootstrap_nodes_one_dead(punch: PunchFactory) -> None:
    server = punch.server()
    dead = f"/ip4/127.0.0.1/tcp/{dead_port()}"
    listener = punch.start("listener", "--bootstrap", dead, "--bootstrap", server.addr)
    listener.wait_event("registered")
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--bootstrap", dead, "--count", "2",
                         "--interval", "0.2", "--timeout", "60")
    assert dialer.wait_exit(90) == 0, dialer.describe()
    retry = dialer.wait_event("bootstrap_retry")
    assert retry["addr"] == dead and retry["error"]


def test_server_restart_network_recovers(punch: PunchFactory, tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "server-data"
    flags = ("--port", str(port), "--data-dir", str(data))
    server = punch.server(*flags)
    first_id = server.peer_id
    listener = punch.listener(server)
    mark = listener.mark()

    server.kill()  # a crash: no goodbye to anyone
    time.sleep(0.5)
    server2 = punch.server(*flags, name="server-2")
    assert server2.peer_id == first_id  # same data dir, same key, same peer id

    # The listener redials with backoff and re-provides to the fresh (empty) server.
    listener.wait_event("bootstrapped", 60, after=mark)
    listener.wait_event("registered", 60, after=mark)
    dialer = punch.start("dialer", "--bootstrap", server2.addr, "--count", "1", "--timeout", "60")
    assert dialer.wait_exit(90) == 0, dialer.describe() + listener.describe()


def test_identity_persists_with_mode_0600(punch: PunchFactory, tmp_path: Path) -> None:
    data = tmp_path / "d"
    first = punch.server("--data-dir", str(data))
    pid1 = first.peer_id
    assert first.stop() == 0
    key = data / "identity-server.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    second = punch.server("--data-dir", str(data))
    assert second.peer_id == pid1
    # An explicit --identity file is used as given, whatever the role.
    third = punch.start("listener", "--identity", str(key), "--bootstrap", f"/ip4/127.0.0.1/tcp/{dead_port()}")
    assert third.peer_id == pid1
    fresh = punch.server("--ephemeral", name="ephemeral")
    assert fresh.peer_id != pid1


def test_unreachable_bootstrap_retries_without_exit(punch: PunchFactory) -> None:
    dead = f"/ip4/127.0.0.1/tcp/{dead_port()}"
    listener = punch.start("listener", "--bootstrap", dead)
    first = listener.wait_event("bootstrap_retry")
    second = listener.wait_event("bootstrap_retry", pred=lambda e: e["ts"] > first["ts"])
    assert second["retry_in"] > first["retry_in"]  # backs off
    assert listener.alive()
    assert listener.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_closes_the_port(punch: PunchFactory, sig: int) -> None:
    server = punch.server()
    listener = punch.listener(server)
    for proc in (listener, server):
        port = proc.port
        assert port_accepts(port)
        assert proc.stop(sig, timeout=15) == 0, proc.describe()
        assert not port_accepts(port), f"{proc.name} still accepts on {port} after exit"
        assert "Traceback" not in proc.stderr_text(), proc.stderr_text()


def test_human_output_like_the_seed(punch: PunchFactory) -> None:
    server = punch.server()
    proc = punch.start("listener", "--bootstrap", server.addr, "--ephemeral", "--listen-addr", "127.0.0.1",
                       "--port", "0", node_flags=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("Registered in DHT" in line for line in proc.noise):
        time.sleep(0.1)
    text = "\n".join(proc.noise)
    assert "Registered in DHT under 'simple-chat'" in text, proc.describe()
    assert "Configuration:" in text and "Peer ID:" in text and "✓" in text
    assert "/ip4/127.0.0.1/tcp/" in text.split("Addresses others should use:")[1]


def test_config_init_and_flags_override(punch: PunchFactory, tmp_path: Path) -> None:
    path = tmp_path / "conf" / "punch.toml"
    done = punch.run("config", "init", str(path))
    assert done.returncode == 0, done.stderr
    parsed = tomllib.loads(path.read_text())
    assert parsed["node"]["namespace"] == "simple-chat"
    assert path.read_text().lstrip().startswith("#")  # commented
    again = punch.run("config", "init", str(path))
    assert again.returncode == 2 and again.stderr.count("\n") == 1

    server = punch.server()
    port = free_port()
    custom = tmp_path / "custom.toml"
    custom.write_text(
        f'[node]\nport = {port}\nnamespace = "from-file"\nbootstrap = ["{server.addr}"]\n'
        '[dialer]\nmessage = "file says hi"\n'
    )
    listener = punch.start("listener", "--config", str(custom), "--namespace", "from-flag", "--ephemeral",
                           "--json", "--listen-addr", "127.0.0.1", node_flags=False)
    reg = listener.wait_event("registered")
    assert reg["namespace"] == "from-flag"  # the flag beats the file
    assert listener.port == port  # the file beats the default
    dialer = punch.start("dialer", "--config", str(custom), "--namespace", "from-flag", "--count", "1",
                         "--timeout", "60", "--port", "0")
    assert dialer.wait_exit(90) == 0, dialer.describe()
    sent = dialer.wait_event("message_sent")
    assert sent["args"]["text"] == "file says hi Message #1"


def test_dialer_without_peers_exits_1(punch: PunchFactory) -> None:
    server = punch.server()
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--namespace", "nobody-here", "--count", "1",
                         "--timeout", "3")
    assert dialer.wait_exit(60) == 1
    err = dialer.wait_event("error", pred=lambda e: e.get("where") == "dialer")
    assert "0 of 1" in err["message"]


BAD_INPUT = [
    (["listener", "--bogus"], "unrecognized arguments"),
    (["listener", "--port", "99999"], "out of range"),
    (["dialer", "--count", "0"], "greater than 0"),
    (["listener", "--bootstrap", "/ip4/127.0.0.1/tcp/notaport"], "malformed multiaddr"),
    (["listener", "--bootstrap", "127.0.0.1:51820"], "malformed multiaddr"),
    (["listener", "--bootstrap", "/ip4/127.0.0.1/udp/5"], "unsupported multiaddr"),
    (["nosuchrole"], "invalid choice"),
    ([], "required"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_INPUT, ids=[" ".join(a) or "none" for a, _ in BAD_INPUT])
def test_bad_flags_exit_2_with_one_line(punch: PunchFactory, argv: list[str], needle: str) -> None:
    done = punch.run(*argv)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n"), done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_port_in_use_exits_2(punch: PunchFactory) -> None:
    server = punch.server()
    done = punch.run("listener", "--port", str(server.port), "--bootstrap", server.addr, node_flags=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "address already in use" in done.stderr
    fatal = [line for line in done.stdout.splitlines() if '"fatal": true' in line]
    assert len(fatal) == 1  # --json also reports it on stdout


@pytest.mark.parametrize("kind", ["garbage", "directory", "unreadable_config", "bad_config"])
def test_unusable_files_exit_2(punch: PunchFactory, tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "bad"
    if kind == "garbage":
        bad.write_bytes(b"this is not a key")
        os.chmod(bad, 0o600)
        argv = ["server", "--identity", str(bad)]
        needle = "not a libp2p private key"
    elif kind == "directory":
        bad.mkdir()
        argv = ["server", "--identity", str(bad)]
        needle = "cannot read identity key"
    elif kind == "unreadable_config":
        argv = ["server", "--config", str(bad)]
        needle = "does not exist"
    else:
        bad.write_text("[node]\nport = 'eighty'\n")
        argv = ["server", "--config", str(bad)]
        needle = "wrong type"
    done = punch.run(*argv, node_flags=True)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
