"""The connection manager's pruning policy (pure) and its trio adapter on real hosts."""

from __future__ import annotations

import pytest
import trio

from punch_net.api import NodeError
from punch_net.config import NodeConfig
from punch_net.node import Node
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.routing.connmgr import ConnManager, ConnSnapshot, select_prune
from punch_net.runtime import Runtime

quiet_libp2p_logging()


def snap(peer: str, age: float = 60.0, busy: bool = False, value: int = 0, protected: bool = False) -> ConnSnapshot:
    return ConnSnapshot(peer, age, busy, value, protected)


def test_nothing_pruned_at_or_below_high() -> None:
    conns = [snap(f"p{i}") for i in range(10)]
    assert select_prune(conns, low=5, high=10, grace=1) == []


def test_prunes_down_to_low_least_valuable_oldest_first() -> None:
    conns = [snap("old", age=100), snap("young", age=20), snap("dht", age=200, value=10)] + [
        snap(f"x{i}", age=50, value=5) for i in range(3)]
    victims = select_prune(conns, low=2, high=4, grace=1)
    assert len(victims) == 4
    assert victims[:2] == ["old", "young"]  # value 0 first, oldest first
    assert "dht" not in victims  # the most valuable survives


def test_protected_busy_and_new_connections_are_never_pruned() -> None:
    conns = [snap("prot", protected=True), snap("busy", busy=True), snap("new", age=0.5)] + [
        snap(f"x{i}") for i in range(5)]
    victims = select_prune(conns, low=0, high=3, grace=2)
    assert set(victims) == {f"x{i}" for i in range(5)}


def test_a_burst_of_young_idle_connections_is_trimmed_to_the_ceiling() -> None:
    """A provide dials 20 peers for one ADD_PROVIDER each: within the 5 s grace those
    connections used to be unprunable, and single nodes of a 100-node testnet held 60-83.
    Above high + (high - low) / 2 (here 8 + 4 = 12), young connections with no open stream
    (and at least MIN_AGE old) go too, down to that ceiling; the rest keep their grace."""
    burst = [ConnSnapshot(f"y{i}", 1.5 + i / 100, False, 0, False, 0) for i in range(12)]
    streaming = [ConnSnapshot(f"s{i}", 2.0, False, 0, False, 1) for i in range(3)]
    fresh = [ConnSnapshot(f"f{i}", 0.2, False, 0, False, 0) for i in range(3)]
    conns = burst + streaming + fresh  # 18 open, all younger than the grace
    victims = select_prune(conns, low=0, high=8, grace=5)
    assert len(victims) == 18 - 12
    assert set(victims) <= {c.peer for c in burst}, victims
    assert victims[0] == "y11"  # oldest first
    assert select_prune(conns[:12], low=0, high=8, grace=5) == []  # at the ceiling: grace holds


async def test_trim_closes_its_victims_concurrently(autojump_clock: trio.abc.Clock) -> None:
    """Closing a connection waits on its muxer; one victim after the other, a trim of 30
    took seconds on a busy node while new connections kept arriving."""
    from types import SimpleNamespace

    conns = {f"peer{i}": [] for i in range(10)}
    closed: list[str] = []

    async def disconnect(peer: str) -> None:
        await trio.sleep(1.0)  # a slow muxer close
        conns.pop(peer, None)
        closed.append(peer)

    network = SimpleNamespace(get_connections_map=lambda: conns)
    node = SimpleNamespace(host=SimpleNamespace(get_network=lambda: network, disconnect=disconnect),
                           bootstrap_peers=set(), has_session=lambda peer: False, peer_id="me")
    manager = ConnManager(node, low=2, high=4, grace=0.0)  # type: ignore[arg-type]
    start = trio.current_time()
    assert await manager.trim() == 8
    assert trio.current_time() - start < 1.5, "victims were closed one after the other"
    assert len(closed) == 8 and manager.pruned == 8


def test_may_return_fewer_than_needed_when_everything_is_protected() -> None:
    conns = [snap(f"p{i}", protected=True) for i in range(10)]
    assert select_prune(conns, low=1, high=2, grace=0) == []


def test_bad_watermarks_are_one_line_errors() -> None:
    with pytest.raises(NodeError, match="low <= high"):
        Runtime(NodeConfig(ephemeral=True, conn_low=10, conn_high=5))


def test_protect_and_tag_api_without_a_swarm() -> None:
    cm = ConnManager.__new__(ConnManager)
    ConnManager.__init__(cm, node=None, low=1, high=2)  # type: ignore[arg-type]
    peer = "12D3KooWLUSqVybRLZ7CwyXNrTfecs6HibEwZBcZBqw8aR7wLG2E"
    cm.protect(peer, "transfer")
    cm.protect(peer, "session")
    assert cm.is_protected(peer) and cm.is_protected(peer, "transfer")
    assert cm.unprotect(peer, "transfer") is True  # still protected by "session"
    assert cm.unprotect(peer, "session") is False
    assert not cm.is_protected(peer)


async def test_hub_prunes_idle_unprotected_connections_to_low() -> None:
    """A hub with low=2/high=4 and 7 client-mode peers (not DHT neighbours): after the
    grace period it keeps the protected peer and the one with an open command session,
    and prunes idle ones down to the low watermark."""
    def cfg(role: str = "server", **kw: object) -> NodeConfig:
        return NodeConfig(role=role, listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True,
                          dht_refresh_interval=0, **kw)  # type: ignore[arg-type]

    hub_rt = Runtime(cfg(conn_low=2, conn_high=4))  # the connection manager is a runtime component
    hub, connmgr = hub_rt.node, hub_rt.connmgr
    connmgr.grace = 0.5
    peers = [Node(cfg(dht_mode="client", role="dialer")) for _ in range(7)]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub_rt.run)
        for p in peers:
            await nursery.start(p.run)
        with trio.fail_after(30):
            for p in peers:
                await p.dial(hub.listen_addrs()[0])
            connmgr.protect(peers[0].peer_id, "test")
            await peers[1].send_command(hub.peer_id, "echo", {"keep": True})  # opens a session
            while len(hub.connected_peers()) < 7:
                await trio.sleep(0.05)
            while len(hub.connected_peers()) > 2 + 2:  # low + (protected + busy) at most
                await trio.sleep(0.1)
            while connmgr.pruned < 3:  # the pass counts a victim once its disconnect returns
                await trio.sleep(0.05)
        left = set(hub.connected_peers())
        for _ in range(3):  # more passes change nothing (run here, not waited for)
            assert await connmgr.trim() == 0
        assert set(hub.connected_peers()) == left
        assert peers[0].peer_id in left, "protected peer was pruned"
        assert peers[1].peer_id in left, "peer with an open command session was pruned"
        assert len(left) <= 2 + 2
        assert connmgr.pruned >= 3
        nursery.cancel_scope.cancel()
