"""A 20-node testnet, one `punch` process per node on 127.0.0.1 (issue 7's CI test).

- every node comes up and bootstraps;
- provider lookups between random pairs all succeed;
- after SIGKILLing a third of the nodes and one refresh on the survivors, lookups
  between survivors still all succeed;
- `punch testnet` stops every process it started on ctrl+c (SIGINT), and exits 2 with
  one line on bad flags;
- the controller drives every child through the NodeAPI over the child's stdin/stdout
  (`child.api`, a RemoteNode): typed results, concurrent calls, the same errors.

Correctness only, with generous timeouts: speed is benchmarks/dht_scale.py's job.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import trio

from punch_net.api import Health, NodeError, ProviderLookup
from punch_net.ops.wire import ControlError
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_testnet.main import Child, Testnet

quiet_libp2p_logging()

NODES = 20
PAIRS = 12


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


async def lookups(net: Testnet, nodes: list[Child], pairs: int, tag: str, rng: random.Random) -> list[str]:
    """Provide a fresh key on A, look it up from B; return the failures (empty = all found)."""
    failures = []
    for i in range(pairs):
        a, b = rng.sample(nodes, 2)
        key = f"{tag}-{i}"
        res = await a.api.dht_provide(key)
        assert res.ok, f"node {a.index} could not provide {key}"
        found = await b.api.dht_find_providers(key, timeout=20)
        if a.peer_id not in found.providers:
            failures.append(f"{b.index} did not find {a.index} ({found})")
    return failures


@pytest.mark.slow
async def test_twenty_node_testnet_survives_losing_a_third() -> None:
    rng = random.Random(7)
    net = Testnet(NODES, listeners=5)
    pids: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(120):
                await nursery.start(net.run)
                await net.wait_all_up(timeout=120)
            pids = [c.pid for c in net.children if c.pid is not None]
            assert len(pids) == NODES

            with trio.fail_after(60):
                stats = await net.poll_health(timeout=30)
            assert len(stats) == NODES
            assert all(s.routing_table_size > 0 and s.bootstrapped for s in stats), stats
            assert max(s.connections for s in stats) <= 60

            with trio.fail_after(240):
                assert await lookups(net, net.children, PAIRS, "before", rng) == []

            victims = rng.sample(net.children[1:], NODES // 3)
            for child in victims:
                await net.kill(child)
            assert all(not pid_alive(c.pid) for c in victims if c.pid)
            survivors = [c for c in net.children if c not in victims]
            with trio.fail_after(120):
                async with trio.open_nursery() as refreshers:
                    for child in survivors:
                        refreshers.start_soon(child.api.dht_refresh)
            with trio.fail_after(240):
                assert await lookups(net, survivors, PAIRS, "after", rng) == []
            with trio.fail_after(60):
                stats = await net.poll_health(timeout=30)
            assert len(stats) == len(survivors)
            nursery.cancel_scope.cancel()
    finally:
        for pid in pids:  # whatever happened above: nothing may be left running
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not [p for p in pids if pid_alive(p)]


def read_events(proc: subprocess.Popen[str], until: Any, timeout: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        events.append(json.loads(line))
        if until(events):
            return events
    raise AssertionError(f"timed out; events so far: {[e.get('event') for e in events]}")


@pytest.mark.slow
def test_ctrl_c_stops_every_process() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "punch_net.cli", "testnet", "--nodes", "6", "--listeners", "2",
                             "--json", "--status-interval", "1"], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        events = read_events(proc, lambda ev: any(e["event"] == "summary" for e in ev), timeout=120)
        kinds = [e["event"] for e in events]
        assert kinds.count("bootstrap") == 1
        boot = next(e for e in events if e["event"] == "bootstrap")
        assert boot["addr"].startswith("/ip4/127.0.0.1/tcp/") and "/p2p/" in boot["addr"]
        ups = [e for e in events if e["event"] == "node_up"]
        assert len(ups) == 6 and {e["role"] for e in ups} == {"server", "listener"}
        pids = [e["pid"] for e in ups]
        assert all(pid_alive(p) for p in pids)
        status = [e for e in events if e["event"] == "status"]
        assert status and status[-1]["up"] == 6
        proc.send_signal(signal.SIGINT)
        rest = read_events(proc, lambda ev: ev[-1]["event"] == "stopped", timeout=60)
        assert rest[-1]["left_running"] == 0
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if pid_alive(p)], "node processes left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_controller_killed_hard_leaves_no_process_behind() -> None:
    """SIGKILL on the controller: children see their stdin close and stop themselves."""
    proc = subprocess.Popen([sys.executable, "-m", "punch_net.cli", "testnet", "--nodes", "3", "--json"],
                            stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        events = read_events(proc, lambda ev: sum(e["event"] == "node_up" for e in ev) == 3, timeout=120)
        pids = [e["pid"] for e in events if e["event"] == "node_up"]
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if pid_alive(p)]
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "2", "--listeners", "2"], "must leave the bootstrap node"),
    (["--nodes", "0"], None),
    (["--nodes", "5", "--base-port", "65534"], "leaves no room"),
])
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str | None) -> None:
    res = subprocess.run([sys.executable, "-m", "punch_net.cli", "testnet", *args], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    if message:
        assert message in lines[0]


@pytest.mark.slow
async def test_torrent_servers_start() -> None:
    net = Testnet(3, torrent_servers=1)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(120):
            await nursery.start(net.run)
            await net.wait_all_up(timeout=120)
        assert [c.role for c in net.children] == ["server", "torrent-server", "server"]
        assert all(c.alive for c in net.children)
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_the_controller_drives_children_through_the_node_api() -> None:
    """Over a child's stdin/stdout: typed results, many concurrent calls whose request
    lines must not collide on its stdin (the benchmark provides in parallel), the API's own
    errors, and dial + ping (what `testnet.ping` was)."""
    net = Testnet(3)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(120):
            await nursery.start(net.run)
            await net.wait_all_up(timeout=120)
            a, b = net.children[1], net.children[2]
            results: list[Health] = []

            async def one() -> None:
                results.append(await a.api.health())

            async with trio.open_nursery() as calls:
                for _ in range(20):
                    calls.start_soon(one)
            assert len(results) == 20 and {r.pid for r in results} == {a.pid}
            assert results[0].peer_id == a.peer_id == a.api.hello["peer_id"]

            provided = await a.api.dht_provide("drive-me")
            assert provided.ok
            lookup = await b.api.dht_find_providers("drive-me", count=1, trace=True)
            assert isinstance(lookup, ProviderLookup) and lookup.providers == [a.peer_id]
            assert lookup.steps is not None and lookup.lag_total_ms is not None
            # bad_args, as over the control socket (a ControlError with that code)
            with pytest.raises(NodeError, match="count") as bad:
                await b.api.dht_find_providers("drive-me", count=0)
            assert bad.value.code == "bad_args"
            with pytest.raises(NodeError, match="timeout") as bad:
                await b.api.dht_find_providers("drive-me", timeout=31)
            assert bad.value.code == "bad_args"

            assert await a.api.dial(b.dial_addr) == b.peer_id
            assert 0 < await a.api.ping(b.peer_id) < 5
            refreshed = await a.api.dht_refresh()
            assert refreshed.after >= 1 and refreshed.reprovided >= 1

            await net.kill(b)
            with pytest.raises(ControlError) as gone:
                await b.api.health()
            assert gone.value.code == "disconnected"
        nursery.cancel_scope.cancel()
