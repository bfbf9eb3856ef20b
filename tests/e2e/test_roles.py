"""The three roles as separate `punch` processes on 127.0.0.1, talking only through the DHT."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from punch_harness import PunchFactory, PunchProcess, dead_port, free_port, port_accepts

pytestmark = pytest.mark.slow

EVENT_KINDS_DIALER = {"listening", "bootstrapped", "discovered", "connected", "message_sent", "reply"}


def test_dialer_finds_listener_through_the_dht(punch: PunchFactory, shared_server: PunchProcess) -> None:
    server = shared_server
    listener = punch.listener(server, "--namespace", "t-basic")
    # The dialer knows only the server: the listener's address must come from the DHT.
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--count", "3", "--interval", "0.2",
                         "--timeout", "60", "--namespace", "t-basic")
    assert dialer.wait_exit(90) == 0, dialer.describe()

    kinds = {e["event"] for e in dialer.events}
    assert EVENT_KINDS_DIALER <= kinds, dialer.describe()
    assert {"listening", "bootstrapped", "registered", "connected", "message_received"} <= {
        e["event"] for e in listener.events}, listener.describe()
    found = dialer.find_events("discovered", lambda e: e["peer_id"] == listener.peer_id)
    assert found and found[0]["namespace"] == "t-basic"
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


def test_two_listeners_one_dialer(punch: PunchFactory, shared_server: PunchProcess) -> None:
    server = shared_server
    one = punch.listener(server, "--namespace", "t-two", name="listener-1")
    two = punch.listener(server, "--namespace", "t-two", name="listener-2")
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--interval", "0.3", "--namespace", "t-two")
    for listener in (one, two):
        got = listener.wait_event("message_received", 60, lambda e: e["peer_id"] == dialer.peer_id)
        assert got["args"]["text"].startswith("Hello from dialer! Message #")
    for listener in (one, two):
        dialer.wait_event("reply", 30, lambda e, p=listener.peer_id: e["peer_id"] == p and e["ok"])
    assert dialer.stop(signal.SIGINT) == 0
    assert one.alive() and two.alive()


def test_bootstrap_without_peer_id(punch: PunchFactory, shared_server: PunchProcess) -> None:
    """Users type `/ip4/HOST/tcp/PORT` without /p2p/: the peer id is learned on dial."""
    server = shared_server
    bare = server.addr_without_id
    assert "/p2p/" not in bare
    listener = punch.listener(bare, "--namespace", "t-bare")
    boot = listener.wait_event("bootstrapped")
    assert boot["peers"] == [server.peer_id]
    dialer = punch.start("dialer", "--bootstrap", bare, "--count", "1", "--timeout", "60", "--namespace", "t-bare")
    assert dialer.wait_exit(90) == 0, dialer.describe()


def test_two_bootstrap_nodes_one_dead(punch: PunchFactory, shared_server: PunchProcess) -> None:
    server = shared_server
    dead = f"/ip4/127.0.0.1/tcp/{dead_port()}"
    listener = punch.start("listener", "--bootstrap", dead, "--bootstrap", server.addr, "--namespace", "t-dead")
    listener.wait_event("registered")
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--bootstrap", dead, "--count", "2",
                         "--interval", "0.2", "--timeout", "60", "--namespace", "t-dead")
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
    listener.wait_event("disconnected", 30, pred=lambda e: e["peer_id"] == first_id, after=mark)  # it noticed
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


def test_human_output_like_the_seed(punch: PunchFactory, shared_server: PunchProcess) -> None:
    proc = punch.start("listener", "--bootstrap", shared_server.addr, "--ephemeral", "--listen-addr", "127.0.0.1",
                       "--port", "0", "--namespace", "t-human", node_flags=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("Registered in DHT" in line for line in proc.noise):
        time.sleep(0.1)
    text = "\n".join(proc.noise)
    assert "Registered in DHT under 't-human'" in text, proc.describe()
    assert "Configuration:" in text and "Peer ID:" in text and "✓" in text
    assert "/ip4/127.0.0.1/tcp/" in text.split("Addresses others should use:")[1]


def test_config_init_and_flags_override(punch: PunchFactory, shared_server: PunchProcess, tmp_path: Path) -> None:
    path = tmp_path / "conf" / "punch.toml"
    done = punch.run("config", "init", str(path))
    assert done.returncode == 0, done.stderr
    parsed = tomllib.loads(path.read_text())
    assert parsed["node"]["namespace"] == "simple-chat"
    assert path.read_text().lstrip().startswith("#")  # commented
    again = punch.run("config", "init", str(path))
    assert again.returncode == 2 and again.stderr.count("\n") == 1

    server = shared_server
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


def test_dialer_without_peers_exits_1(punch: PunchFactory, shared_server: PunchProcess) -> None:
    dialer = punch.start("dialer", "--bootstrap", shared_server.addr, "--namespace", "nobody-here", "--count", "1",
                         "--timeout", "3")
    assert dialer.wait_exit(60) == 1
    err = dialer.wait_event("error", pred=lambda e: e.get("where") == "dialer")
    assert "0 of 1" in err["message"]


def bad_input_cases(tmp_path: Path, server: PunchProcess) -> list[tuple[list[str], bool, str]]:
    """(argv, add node flags?, text the one stderr line must contain)."""
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"this is not a key")
    os.chmod(garbage, 0o600)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[node]\nport = 'eighty'\n")
    return [
        (["listener", "--bogus"], False, "unrecognized arguments"),
        (["listener", "--port", "99999"], False, "out of range"),
        (["dialer", "--count", "0"], False, "greater than 0"),
        (["listener", "--bootstrap", "/ip4/127.0.0.1/tcp/notaport"], False, "malformed multiaddr"),
        (["listener", "--bootstrap", "127.0.0.1:51820"], False, "malformed multiaddr"),
        (["listener", "--bootstrap", "/ip4/127.0.0.1/udp/5"], False, "unsupported multiaddr"),
        (["nosuchrole"], False, "invalid choice"),
        ([], False, "required"),
        (["listener", "--port", str(server.port), "--bootstrap", server.addr], True, "address already in use"),
        (["server", "--identity", str(garbage)], True, "not a libp2p private key"),
        (["server", "--identity", str(tmp_path)], True, "cannot read identity key"),  # a directory
        (["server", "--config", str(tmp_path / "missing.toml")], True, "does not exist"),
        (["server", "--config", str(bad_toml)], True, "wrong type"),
    ]


def test_bad_input_exits_2_with_one_line(punch: PunchFactory, shared_server: PunchProcess, tmp_path: Path) -> None:
    """Bad flags, multiaddrs, port in use, unusable key or config: exit 2, exactly one line
    on stderr, no traceback. All cases run at once (each is a process start)."""
    cases = bad_input_cases(tmp_path, shared_server)
    procs = []
    for argv, node_flags, _ in cases:
        cmd = (PunchProcess.build_argv(argv[0], argv[1:], node_flags) if argv
               else [sys.executable, "-m", "punch_net.cli"])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      stdin=subprocess.DEVNULL, cwd=tmp_path, env={**os.environ, **punch.env}))
    failures = []
    deadline = time.monotonic() + 300  # for all of them: generous, a busy CI box runs 13 starts slowly
    for (argv, node_flags, needle), proc in zip(cases, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        ok = (proc.returncode == 2 and err.count("\n") == 1 and err.endswith("\n") and needle in err
              and "Traceback" not in err + out)
        if node_flags:  # with --json the fatal error is also one JSON line on stdout
            ok = ok and sum('"fatal": true' in line for line in out.splitlines()) == 1
        if not ok:
            failures.append(f"punch {' '.join(argv)} -> exit {proc.returncode}, stderr {err!r}")
    assert not failures, "\n".join(failures)
