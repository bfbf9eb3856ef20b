"""`--metrics-port` scraped over HTTP, and the control socket, on real `punch` processes."""

from __future__ import annotations

import os
import stat
import urllib.request
from pathlib import Path

import pytest
import trio
from monitor_helpers import PunchFactory, free_port
from prometheus_client.parser import text_string_to_metric_families

from punch_net.ops.control import ControlClient, ControlError

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    out["__families__"] = [({"name": fam.name, "type": fam.type}, 0.0)
                           for fam in text_string_to_metric_families(text)]
    return out


def value(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in m.get(name, []) if all(lab.get(k) == want for k, want in labels.items()))


def test_metrics_have_the_named_series(punch: PunchFactory) -> None:
    sport, lport, dport = free_port(), free_port(), free_port()
    server = punch.server("--metrics-port", str(sport))
    listener = punch.listener(server, "--metrics-port", str(lport))
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--interval", "0.2", "--metrics-port", str(dport))
    dialer.wait_event("metrics")
    for _ in range(3):
        dialer.wait_event("reply", 60, after=dialer.mark())

    d = scrape(dport)
    outbound = value(d, "libp2p_swarm_connections_opened_total", dir="outbound", transport="tcp",
                     security="noise", muxer="/yamux/1.0.0")
    assert outbound >= 2  # the server and the listener
    assert value(d, "punch_messages_total", direction="out") >= 3
    assert value(d, "punch_replies_total") >= 3
    assert value(d, "punch_request_duration_seconds_count", status="ok") >= 3
    assert 0 < value(d, "punch_request_duration_seconds_sum", status="ok") < 30
    assert value(d, "punch_dht_lookups_total", op="find_providers") >= 1
    assert value(d, "punch_dht_lookup_duration_seconds_count", op="find_providers") >= 1
    assert value(d, "punch_connected_peers") >= 2
    assert value(d, "punch_reputation_events_total", kind="success") >= 3
    assert value(d, "punch_reputation_score", peer_id=listener.peer_id) > 0.5
    assert value(d, "punch_build_info", role="dialer") == 1
    assert "libp2p_swarm_dial_errors_total" in d and value(d, "libp2p_swarm_dial_errors_total") == 0
    types = {lab["name"]: lab["type"] for lab, _ in d["__families__"]}
    for fam in ("libp2p_swarm_connections_opened", "libp2p_swarm_connections_closed",
                "libp2p_holepunch_outcomes", "libp2p_swarm_dial_errors", "punch_torrent_bytes",
                "punch_torrent_pieces", "libp2p_relaysvc_reservations", "libp2p_relaysvc_connections"):
        assert types.get(fam) == "counter", fam
    assert types.get("punch_dht_lookup_duration_seconds") == "histogram"
    assert value(d, "process_resident_memory_bytes") > 10_000_000

    listener_m = scrape(lport)
    assert value(listener_m, "libp2p_swarm_connections_opened_total", dir="inbound") >= 1
    assert value(listener_m, "punch_messages_total", direction="in") >= 3
    assert value(listener_m, "punch_dht_lookups_total", op="provide", result="ok") >= 1
    assert value(listener_m, "libp2p_relaysvc_status") == 0
    assert value(listener_m, "punch_reachable_as", how="unknown") == 1  # loopback: nobody outside vouches
    assert value(listener_m, "punch_reachable_as", how="public") == 0
    assert value(scrape(sport), "libp2p_relaysvc_status") == 1  # the server is a relay

    dialer.stop()
    listener_after = scrape(lport)
    assert value(listener_after, "libp2p_swarm_connections_closed_total") >= 1
    assert value(listener_after, "libp2p_swarm_connection_duration_seconds_count") >= 1

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{lport}/other", timeout=10)
    assert err.value.code == 404


def test_metrics_port_in_use_is_one_line(punch: PunchFactory) -> None:
    port = free_port()
    first = punch.server("--metrics-port", str(port))
    first.wait_event("metrics")
    second = punch.start("server", "--metrics-port", str(port), name="second")
    assert second.wait_exit(60) != 0
    err = second.stderr_text().strip()
    assert len(err.splitlines()) == 1 and "metrics" in err and "Traceback" not in err, err


async def test_control_socket(punch: PunchFactory, tmp_path: Path) -> None:
    server = punch.server()
    listener = punch.listener(server)
    path = Path((await listener.aevent("control"))["path"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    async with ControlClient(path) as one, ControlClient(path) as two:  # two fronts at once
        assert one.hello["peer_id"] == listener.peer_id and one.hello["role"] == "listener"
        snap = await one.call("snapshot")
        assert {c["peer_id"] for c in snap["connections"]} >= {server.peer_id}
        assert snap["routing"]["mode"] == "server" and snap["errors"] == []
        assert snap["stats"]["peer_id"] == listener.peer_id
        await two.call("subscribe")
        rtt = await one.call("ping", {"peer": server.peer_id})
        assert rtt >= 0  # seconds (NodeAPI.ping)
        sent = await one.call("request", {"peer": server.peer_id, "command": "echo", "args": {"x": 1}})
        assert sent["ok"] and sent["result"] == {"x": 1}
        with trio.fail_after(20):
            async for msg in two.events:
                if msg["type"] == "event" and msg["event"]["event"] == "reply":
                    break
        with pytest.raises(ControlError) as info:
            await one.call("no-such-op")
        assert info.value.code == "unknown_op"
        with pytest.raises(ControlError) as info:
            await one.call("request", {"peer": 5})
        assert info.value.code == "bad_args"
        # garbage on the wire gets an error reply; the connection stays usable
        assert one._stream is not None
        await one._stream.send_all(b"this is not json\n")
        assert (await one.call("info"))["peer_id"] == listener.peer_id
        rep = await one.call("reputation", {"peer": server.peer_id})
        assert rep[0]["successes"] >= 1
    assert listener.alive()
    listener.stop()
    assert not path.exists()  # removed on a clean exit


def test_reputation_persists_in_the_data_dir(punch: PunchFactory, tmp_path: Path) -> None:
    import json

    server = punch.server()
    listener = punch.listener(server)
    data = tmp_path / "dialer-data"
    dialer = punch.start("dialer", "--bootstrap", server.addr, "--count", "3", "--interval", "0.1",
                         "--data-dir", str(data))
    assert dialer.wait_exit(90) == 0, dialer.describe()
    path = data / "reputation.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = json.loads(path.read_text())
    rec = saved["peers"][listener.peer_id]
    assert rec["successes"] >= 2.9 and rec["failures"] == 0 and rec["latency_ms"] > 0
    # a restart starts from what was saved (and adds to it)
    again = punch.start("dialer", "--bootstrap", server.addr, "--count", "1", "--data-dir", str(data), name="again")
    assert again.wait_exit(90) == 0, again.describe()
    assert json.loads(path.read_text())["peers"][listener.peer_id]["successes"] > rec["successes"]
