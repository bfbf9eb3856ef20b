"""`punch monitor` maps a 10-node local network it is not directly told about.

Nodes join in a chain (each bootstraps to the previous one only), the monitor bootstraps
to the first node only: it can only find the others by crawling routing tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from monitor_helpers import PunchFactory

from punch_net.ops.control import ControlClient

pytestmark = pytest.mark.slow

NODES = 10


async def test_monitor_finds_every_node(punch: PunchFactory) -> None:
    first = punch.server()
    procs = [first]
    for i in range(1, NODES):
        procs.append(punch.start("listener", "--bootstrap", procs[-1].addr, name=f"node-{i}"))
    for p in procs[1:]:
        await p.aevent("registered", 90)
    ids = {p.peer_id for p in procs}
    monitor = punch.start("monitor", "--bootstrap", first.addr, "--crawl-interval", "2")
    sock = Path((await monitor.aevent("control", 60))["path"])
    await monitor.aevent("crawl", 90, pred=lambda e: e["alive"] >= NODES)
    async with ControlClient(sock) as ctl:
        snap = await ctl.call("snapshot", {"parts": ["network"]})  # the network map is a snapshot part
    net = snap["network"]
    assert net["known"] >= NODES
    peers = {p["peer_id"]: p for p in net["peers"]}
    assert ids <= set(peers), f"missing: {ids - set(peers)}"
    assert monitor.peer_id not in peers
    for pid in ids:
        p = peers[pid]
        assert p["alive"] and p["reachability"] == "direct" and p["last_alive"]
        assert p["agent"].startswith("punch/"), p["agent"]
        assert "/ipfs/kad/1.0.0" in p["protocols"] and "/punch/cmd/1.0.0" in p["protocols"]
        assert p["dht_server"] and p["punch"]
        assert p["rtt_ms"] is not None and p["rtt_ms"] >= 0
        assert p["capabilities"]["cores"] >= 1 and p["uptime_s"] > 0
        assert 0 < p["reputation"] <= 1
        assert any("/ip4/127.0.0.1/tcp/" in a for a in p["addrs"])
    assert sum(1 for pid in ids if (peers[pid]["routing_table"] or 0) >= 1) >= NODES - 1

    # a node that goes away is shown as not alive after the next round
    gone = procs[-1]
    gone.kill()
    mark = monitor.mark()
    await monitor.aevent("crawl", 60, after=mark)
    await monitor.aevent("crawl", 60, after=monitor.mark())
    async with ControlClient(sock) as ctl:
        net = (await ctl.call("snapshot", {"parts": ["network"]}))["network"]
    entry = {p["peer_id"]: p for p in net["peers"]}[gone.peer_id]
    assert not entry["alive"] and entry["reachability"] == "unreachable"
