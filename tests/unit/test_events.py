"""Typed events and the bounded bus: a slow subscriber loses events, never stalls the node."""

from __future__ import annotations

import json

import pytest
import trio

from punch_net import events as ev


def test_to_json_names_the_event_and_is_serialisable() -> None:
    e = ev.Reply(peer_id="p", id="1", ok=True, result={"a": 1}, rtt_ms=1.5)
    obj = e.to_json()
    assert obj["event"] == "reply" and obj["result"] == {"a": 1} and obj["ts"] > 0
    json.dumps(obj)
    kinds = {cls.kind for cls in ev.Event.__subclasses__()}
    assert {"listening", "bootstrapped", "registered", "discovered", "connected", "message_sent", "reply",
            "message_received", "error", "bootstrap_retry", "disconnected"} <= kinds


async def test_bus_fans_out_and_drops_for_slow_subscribers() -> None:
    bus = ev.EventBus()
    with bus.subscribe(maxsize=3) as slow, bus.subscribe(maxsize=100) as fast:
        for i in range(10):
            bus.publish(ev.DHTUpdated(size=i))  # never blocks
        assert bus.dropped == 7 and bus.published == 10
        got_fast = [fast.receive_nowait().size for _ in range(10)]  # type: ignore[attr-defined]
        assert (slow.dropped, fast.dropped) == (7, 0)
        assert got_fast == list(range(10))
        got_slow = [slow.receive_nowait().size for _ in range(3)]  # type: ignore[attr-defined]
        assert got_slow == [0, 1, 2]
    bus.publish(ev.DHTUpdated(size=99))  # no subscribers left: fine
    assert bus.dropped == 7


async def test_unsubscribe_and_closed_receivers_are_forgotten() -> None:
    bus = ev.EventBus()
    with bus.subscribe() as recv:
        recv.close()
        bus.publish(ev.PeerDisconnected(peer_id="x"))
        bus.publish(ev.PeerDisconnected(peer_id="y"))
    assert bus.subscribers == 0
    with bus.subscribe(maxsize=1) as recv:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: trio.sleep(0))
            bus.publish(ev.ErrorEvent(message="m", where="w"))
            with trio.fail_after(1):
                got = await recv.receive()
        assert isinstance(got, ev.ErrorEvent) and got.to_json()["where"] == "w"


async def test_replay_gives_a_late_subscriber_the_backlog_without_ticks() -> None:
    from punch_net.torrent import events as tev

    bus = ev.EventBus(backlog=3)
    for i in range(5):
        bus.publish(ev.MessageReceived(peer_id="p", id=str(i), command="message", args={}, sender="s"))
        bus.publish(tev.Progress(info_hash="h", have=i, total=9, bytes_per_s=1.0, peers=1))  # transient
    with bus.subscribe(maxsize=10, replay=True) as late, bus.subscribe(maxsize=10) as live:
        got = [late.receive_nowait() for _ in range(3)]
        assert [e.id for e in got if isinstance(e, ev.MessageReceived)] == ["2", "3", "4"]
        bus.publish(ev.DHTUpdated(size=1))
        assert isinstance(late.receive_nowait(), ev.DHTUpdated)
        assert isinstance(live.receive_nowait(), ev.DHTUpdated)  # no replay asked: live only


def test_dial_progress_is_worded_step_by_step() -> None:
    from punch_net.cli.render import human

    peer = "12D3KooWJgXwKXA91NWKxYjX43YVrKWdKZom3picnPJhC9qgC89Y"
    tried = ["routing_table", "peerstore", "dht"]
    asking = human(ev.DialProgress(peer_id=peer, stage="lookup", tried=tried))
    found = human(ev.DialProgress(peer_id=peer, stage="lookup", tried=tried, found_in="dht",
                                  addrs=["/ip4/127.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/1"]))
    assert asking is not None and asking.endswith("routing table ✗, peerstore ✗, DHT …")
    assert found is not None and found.endswith("routing table ✗, peerstore ✗, DHT → 2 addrs")
    dialing = human(ev.DialProgress(peer_id=peer, stage="dialing", tried=tried, found_in="dht",
                                    addrs=["/ip4/127.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/1"]))
    assert dialing is not None and "/ip4/127.0.0.1/tcp/1 (+1 more)" in dialing
    failed = human(ev.DialProgress(peer_id=peer, stage="failed", tried=tried, error="dial X: timed out"))
    assert failed is not None and failed.endswith("dial X: timed out")


def test_bootstrapped_line_counts_peers_in_english() -> None:
    from punch_net.cli.render import human

    assert human(ev.Bootstrapped(peers=["a"], routing_table_size=1)) == \
        "[green]✓[/green] DHT bootstrapped (1 peer in routing table)"
    assert "(3 peers in routing table)" in str(human(ev.Bootstrapped(peers=["a"], routing_table_size=3)))


def test_header_shows_the_namespace_the_role_uses(capsys: pytest.CaptureFixture[str]) -> None:
    """The torrent roles provide and search "punch-torrent" whatever --namespace says."""
    from punch_net.cli.main import Printer
    from punch_net.config import NodeConfig

    for role, namespace in (("torrent-client", "punch-torrent"), ("listener", "simple-chat")):
        Printer(False, NodeConfig(role=role, ephemeral=True)).header()
        out = capsys.readouterr().out
        assert f"Namespace: {namespace} " in out, out
