"""Real attacking peers against a real `punch server` process (issue 14, points 1-3): the
honest peer must be served while the attack lasts, and the victim's memory and file
descriptors must stay bounded. Attackers dial from 127.0.0.2, the honest peer from
127.0.0.1 (tests/support/attackers.py), so per-IP limits mean what they would on the
internet. Each test runs well under 30 s; the figures for the full-size attacks are in
benchmarks/attack_bench.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from attackers import (
    ATTACKER_IP,
    honest_echo,
    kad_attack,
    non_reading_attack,
    open_fds,
    rss_mib,
    silent_connections,
)
from punch_harness import PunchFactory, kad_find_node, libp2p_host, peer_info_of


def limits_config(tmp_path: Path, **limits: int | float) -> str:
    path = tmp_path / "limits.toml"
    path.write_text("[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in limits.items()))
    return str(path)


async def wait_for(cond: object, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def fds_settled(pid: int, timeout: float) -> None:
    """Until `pid`'s open fds stop changing for 1.5 s (or `timeout`)."""
    with trio.move_on_after(timeout):
        last, since = open_fds(pid), trio.current_time()
        while trio.current_time() - since < 1.5:
            await trio.sleep(0.25)
            now = open_fds(pid)
            if now != last:
                last, since = now, trio.current_time()


async def test_silent_kad_streams_from_many_identities_do_not_starve_honest_peers(
        punch: PunchFactory, tmp_path: Path) -> None:
    """10 throwaway identities × 4 silent kad streams (before: 3 × 4 made every honest
    FIND_NODE fail). The protocol-wide limit is lowered to 24 so that, without the per-IP
    limit, the attack alone (40 streams) would fill it."""
    server = punch.server("--config", limits_config(tmp_path, streams_per_protocol=24))
    target = peer_info_of(server.addr)
    opened = [0]
    async with trio.open_nursery() as nursery, libp2p_host() as honest:
        with trio.fail_after(60):
            await nursery.start(kad_attack, target, 10, 4, ATTACKER_IP, opened)
        await wait_for(lambda: opened[0] >= 16, 20, "the attack's streams")
        await honest.connect(target)
        served = 0
        for _ in range(10):
            await kad_find_node(honest, target.peer_id, timeout=5)
            await honest_echo(honest, target.peer_id)
            served += 1
        assert served == 10
        # The attackers kept trying: streams beyond their share were refused, not queued.
        assert opened[0] >= 16
        nursery.cancel_scope.cancel()


async def test_silent_connection_flood_leaves_room_for_honest_peers(punch: PunchFactory) -> None:
    """1,000 silent TCP connections from one address (before: 40 of 40 honest connection
    attempts failed); each honest try is a fresh host, so a fresh connection and handshake."""
    server = punch.server()
    target = peer_info_of(server.addr)
    port = int(server.addr_without_id.rsplit("/", 1)[1])
    fds_before = open_fds(server.pid)
    opened = [0]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            await nursery.start(silent_connections, port, 1000, ATTACKER_IP, "127.0.0.1", opened)
        await fds_settled(server.pid, 15)  # the victim has taken in what it will of the flood
        for _ in range(8):
            async with libp2p_host() as honest:
                with trio.fail_after(10):
                    await honest.connect(target)
                await kad_find_node(honest, target.peer_id, timeout=5)
                await honest_echo(honest, target.peer_id)
        # The gate closes what is over the per-IP limits at once: the victim holds a few
        # of the attacker's sockets, not a thousand.
        assert open_fds(server.pid) < fds_before + 100, (fds_before, open_fds(server.pid))
        assert opened[0] >= 1000
        nursery.cancel_scope.cancel()


async def test_non_reading_peers_are_held_back_and_memory_comes_back(punch: PunchFactory) -> None:
    """6 peers pipeline 1 MiB echo requests and never read a reply (before: RSS 99 → 437 MiB
    for one such peer, and it stayed): honest commands are served meanwhile, RSS stays
    bounded, and comes back once the attackers leave."""
    server = punch.server()
    target = peer_info_of(server.addr)
    async with libp2p_host() as honest:
        await honest.connect(target)
        await honest_echo(honest, target.peer_id)
        baseline = rss_mib(server.pid)
        sent = [0]
        peak = baseline
        async with trio.open_nursery() as nursery:
            with trio.fail_after(60):
                await nursery.start(non_reading_attack, target, 6, 1 << 20, ATTACKER_IP, sent)
            await wait_for(lambda: sent[0] >= 30, 20, "the attackers' requests")
            end = trio.current_time() + 8
            served = 0
            while trio.current_time() < end:
                await honest_echo(honest, target.peer_id, timeout=5)
                served += 1
                peak = max(peak, rss_mib(server.pid))
                await trio.sleep(0.2)
            assert served >= 10
            nursery.cancel_scope.cancel()
        assert peak < baseline + 120, (baseline, peak)
        await wait_for(lambda: rss_mib(server.pid) < baseline + 30, 25,
                       f"RSS back near {baseline:.0f} MiB (now {rss_mib(server.pid):.0f})")
        await honest_echo(honest, target.peer_id)


@pytest.fixture(autouse=True)
def _loopback_alias_usable() -> None:
    """127.0.0.2 must be bindable (all of 127/8 is loopback on Linux)."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((ATTACKER_IP, 0))
        except OSError:
            pytest.skip(f"{ATTACKER_IP} is not a local address here")
