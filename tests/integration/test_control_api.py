"""The control server and RemoteNode over a real Unix socket, in front of a small in-memory
NodeAPI: this tests the control layer (types, errors, limits, events), not the network."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from same_types import assert_same_types

from punch_net import api
from punch_net import events as ev
from punch_net.ops import control
from punch_net.ops.remote import RemoteNode
from punch_net.relay.outcomes import HolePunchRecord, Outcome
from punch_net.relay.status import RelayStatus
from punch_net.torrent.info import CatalogueEntry, TransferInfo, TransferPeer

PEER = "12D3KooWQ33oybJiFMsezFu6uHgmbFFa5hHo8qDAKMhfpNtwDPHY"
OTHER = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHy5PdaJdmi3ie5E7sMhT2m"
WAIT = 10  # seconds: every wait in this file is bounded


def relay() -> RelayStatus:
    return RelayStatus(
        reachability="private", reachability_checked=None, observed_addrs=[], circuit_addrs=[], reservations=[],
        service_enabled=False, service_limits=None, served_reservations=[], served_circuits=[],
        service_counters={},
        hole_punches=[HolePunchRecord(peer_id=OTHER, side="initiator", started=1.0, outcome=Outcome.TIMEOUT,
                                      attempts=3, ms=5000.0)],
        outcome_counts={"TIMEOUT": 1}, connections_via={"relay": 1})


def transfer() -> TransferInfo:
    return TransferInfo(info_hash="cd" * 20, name="a.bin", size=100, have=1, total=2, bytes_per_s=10.0, eta_s=10.0,
                        active_peers=1, state="downloading", direction="download", path="/tmp/a.bin", uploaded=0,
                        upload_bytes_per_s=0.0,
                        peers=(TransferPeer(peer_id=OTHER, down_rate=10.0, up_rate=0.0, have=2, choked=False,
                                            interested=False, state="active", downloaded=50, pieces=1, bad_pieces=0,
                                            outstanding=0, error=""),),
                        piece_sources=(0, -1))


class FakeNode:
    """A NodeAPI with canned answers and a real EventBus."""

    def __init__(self, event_buffer: int = 1000) -> None:
        self.bus = ev.EventBus(backlog=100)
        self.event_buffer = event_buffer
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.resuming = 0  # torrent_resume calls running (they never return)

    async def info(self) -> api.NodeInfo:
        return api.NodeInfo(peer_id=PEER, role="listener", listen_addrs=["/ip4/127.0.0.1/tcp/4001"],
                            pid=os.getpid(), version="test", components=["relay"])

    async def snapshot(self, parts: list[str] | None = None) -> api.Snapshot:
        self.calls.append(("snapshot", {"parts": parts}))
        return api.Snapshot(
            ts=123.5, stats=api.Stats(role="listener", peer_id=PEER, uptime_s=1.0, connections=1,
                                      routing_table_size=1, events_dropped=0),
            listen_addrs=["/ip4/127.0.0.1/tcp/4001"],
            connections=[api.ConnectionInfo(peer_id=OTHER, direction="inbound", remote_addr="/ip4/1.2.3.4/tcp/1",
                                            transport="relayed", security="/noise", muxer="/yamux/1.0.0",
                                            streams=[api.StreamInfo(protocol="/p", direction="inbound")],
                                            rtt_ms=2.5, since=100.0, agent="a", via="relay")],
            relay=relay(), transfers=[transfer()], network={"peers": 3}, errors=[])

    @asynccontextmanager
    async def _events(self, replay: bool) -> AsyncIterator[ev.Subscription]:
        with self.bus.subscribe(self.event_buffer, replay=replay) as sub:
            yield sub

    def events(self, replay: bool = True) -> AsyncIterator[ev.Event]:  # type: ignore[override]
        return self._events(replay)  # type: ignore[return-value]

    async def dial(self, addr: str) -> str:
        self.calls.append(("dial", {"addr": addr}))
        return OTHER

    async def disconnect(self, peer: str) -> None:
        self.calls.append(("disconnect", {"peer": peer}))

    async def find_peers(self, namespace: str, timeout: float | None = None) -> list[api.PeerAddrs]:
        self.calls.append(("find_peers", {"namespace": namespace, "timeout": timeout}))
        return [api.PeerAddrs(peer_id=OTHER, addrs=["/ip4/1.2.3.4/tcp/1"])]

    async def provide(self, namespace: str) -> bool:
        raise RuntimeError("the DHT fell over\nand a second line nobody needs")

    async def request(self, peer: str, command: str, args: api.JSONObject | None = None,
                      timeout: float | None = None) -> api.Reply:
        if command == "busy":
            raise api.CommandFailed("busy", "try later")
        return api.Reply(id="r1", ok=True, result=args, rtt_ms=1.5)

    async def send_best(self, namespace: str, command: str, args: api.JSONObject | None = None,
                        timeout: float | None = None) -> api.RouteResult:
        raise api.NoCandidates(f"nobody announces {namespace}")

    async def rank(self, namespace: str) -> list[api.Candidate]:
        return [api.Candidate(peer_id=OTHER, score=0.5, parts={"rtt": 1.0}, known={"rtt": True})]

    async def ping(self, peer: str, timeout: float = 5.0) -> float:
        self.calls.append(("ping", {"peer": peer, "timeout": timeout}))
        return 0.25

    async def reputation(self, peer: str | None = None) -> list[api.JSONObject]:
        return [{"peer_id": peer or OTHER, "score": 0.5}]

    async def relay_status(self) -> RelayStatus:
        return relay()

    async def transfers(self) -> list[TransferInfo]:
        return [transfer()]

    async def torrent_add(self, info_hash: str) -> TransferInfo:
        raise api.NotRunning("this node runs no torrent manager")

    async def torrent_pause(self, info_hash: str) -> None:
        return None

    async def torrent_resume(self, info_hash: str) -> None:
        self.resuming += 1
        await trio.sleep_forever()  # for the in-flight limit test

    async def torrent_cancel(self, info_hash: str) -> None:
        return None

    async def torrent_verify(self, info_hash: str) -> list[int]:
        return [1]

    async def torrent_catalogue(self, timeout: float | None = None) -> list[CatalogueEntry]:
        return [CatalogueEntry(name="a.bin", size=100, info_hash="cd" * 20, providers=1)]


@asynccontextmanager
async def serving(tmp_path: Path, node: FakeNode | None = None
                  ) -> AsyncIterator[tuple[Path, FakeNode, list[ev.Event]]]:
    node = node or FakeNode()
    published: list[ev.Event] = []
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            path = await nursery.start(partial(control.serve, node, data_dir=tmp_path, publish=published.append))
        assert isinstance(path, Path)
        yield path, node, published
        nursery.cancel_scope.cancel()


class Raw:
    """A bare JSON-lines client, to send what ControlClient never would."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = control.LineBuffer(limit=1 << 24)
        self.lines: list[bytes] = []

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Raw]:
        stream = await trio.open_unix_socket(str(path))
        try:
            yield cls(stream)
        finally:
            await stream.aclose()

    async def read(self) -> dict[str, object]:
        with trio.fail_after(WAIT):
            while not self.lines:
                data = await self.stream.receive_some(65536)
                assert data, "the server closed the connection"
                self.lines.extend(x for x in self.buf.feed(data) if x is not None)
        msg = json.loads(self.lines.pop(0))
        assert isinstance(msg, dict)
        return msg

    async def send(self, raw: bytes) -> None:
        with trio.fail_after(WAIT):
            await self.stream.send_all(raw)


async def test_remote_results_have_the_local_types(tmp_path: Path) -> None:
    async with serving(tmp_path) as (path, local, published):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert published == [ev.ControlListening(path=str(path), ts=published[0].ts)]
        with trio.fail_after(WAIT):
            async with await RemoteNode.connect(path) as remote:
                assert remote.hello["protocol"] == control.PROTOCOL
                assert remote.hello["peer_id"] == PEER and remote.hello["role"] == "listener"
                assert remote.hello["components"] == ["relay"]
                calls = [
                    ("info", {}), ("snapshot", {"parts": ["stats", "relay"]}), ("dial", {"addr": "/ip4/1.2.3.4"}),
                    ("disconnect", {"peer": OTHER}), ("find_peers", {"namespace": "ns", "timeout": 2.0}),
                    ("request", {"peer": OTHER, "command": "echo", "args": {"x": [1, None]}}),
                    ("rank", {"namespace": "ns"}), ("ping", {"peer": OTHER}), ("reputation", {}),
                    ("relay_status", {}), ("transfers", {}), ("torrent_pause", {"info_hash": "cd" * 20}),
                    ("torrent_verify", {"info_hash": "cd" * 20}), ("torrent_catalogue", {}),
                ]
                for name, kwargs in calls:
                    mine = await getattr(remote, name)(**kwargs)
                    theirs = await getattr(local, name)(**kwargs)
                    assert mine == theirs, name
                    assert_same_types(theirs, mine, name)
                snap = await remote.snapshot()
                assert isinstance(snap, api.Snapshot) and isinstance(snap.stats, api.Stats)
                assert isinstance(snap.connections[0], api.ConnectionInfo)
                assert isinstance(snap.relay, RelayStatus) and snap.relay.hole_punches[0].outcome is Outcome.TIMEOUT
                assert snap.transfers is not None and isinstance(snap.transfers[0], TransferInfo)
                assert isinstance(snap.transfers[0].peers[0], TransferPeer) and snap.transfers[0].peers[0].pieces == 1
                assert ("ping", {"peer": OTHER, "timeout": 5.0}) in local.calls  # defaults travel too
    assert not path.exists()  # removed on exit


async def test_remote_errors_keep_their_class_and_code(tmp_path: Path) -> None:
    async with serving(tmp_path) as (path, _node, _):
        with trio.fail_after(WAIT):
            async with await RemoteNode.connect(path) as remote:
                with pytest.raises(api.NotRunning) as not_running:
                    await remote.torrent_add("cd" * 20)
                assert not_running.value.code == "not_running" and "torrent manager" in str(not_running.value)
                with pytest.raises(api.CommandFailed) as failed:
                    await remote.request(OTHER, "busy")
                assert failed.value.code == "busy" and str(failed.value) == "busy: try later"
                with pytest.raises(api.NoCandidates) as none:
                    await remote.send_best("ns", "echo")
                assert none.value.code == "no_candidates"
                with pytest.raises(api.NodeError) as crash:
                    await remote.provide("ns")
                assert crash.value.code == "failed" and str(crash.value) == "the DHT fell over"
                with pytest.raises(control.ControlError) as bad:
                    await remote.dial(5)  # type: ignore[arg-type]
                assert bad.value.code == "bad_args" and isinstance(bad.value, api.NodeError)
                assert await remote.dial("/ip4/1.2.3.4") == OTHER  # still usable


async def test_bad_lines_get_error_replies_and_the_connection_stays(tmp_path: Path) -> None:
    async with serving(tmp_path) as (path, _node, _), Raw.open(path) as raw:
        assert (await raw.read())["type"] == "hello"
        await raw.send(b"this is not json\n")
        reply = await raw.read()
        assert reply["ok"] is False and reply["id"] is None
        assert reply["error"] == {"code": "bad_request", "message": reply["error"]["message"]}  # type: ignore[index]
        await raw.send(b"x" * (control.MAX_LINE + 10) + b"\n")
        reply = await raw.read()
        assert reply["error"]["code"] == "too_long"  # type: ignore[index]
        await raw.send(b'{"id": 7, "op": "no_such_op"}\n')
        reply = await raw.read()
        assert reply["id"] == 7 and reply["error"]["code"] == "unknown_op"  # type: ignore[index]
        await raw.send(b'{"id": 8, "op": "dial", "args": {"adr": "x"}}\n')
        reply = await raw.read()
        assert reply["error"]["code"] == "bad_args" and "unknown argument 'adr'" in reply["error"]["message"]  # type: ignore[index]
        await raw.send(b'{"id": 9, "op": "ops"}\n')
        reply = await raw.read()
        assert reply["ok"] and set(reply["result"]) == {*api.API_METHODS, "subscribe", "unsubscribe", "ops"}  # type: ignore[arg-type]
        await raw.send(b'{"id": 10, "op": "ping", "args": {"peer": "p"}}\n')
        assert (await raw.read())["result"] == 0.25


async def test_inflight_limit_per_client(tmp_path: Path) -> None:
    """Requests beyond MAX_INFLIGHT wait for a slot; the connection stays usable."""
    async with serving(tmp_path) as (path, node, _), Raw.open(path) as raw:
        await raw.read()
        for i in range(control.MAX_INFLIGHT):
            await raw.send(json.dumps({"id": i, "op": "torrent_resume", "args": {"info_hash": "x"}}).encode() + b"\n")
        with trio.fail_after(WAIT):
            # Every slot taken before the late request is sent: requests that arrive together
            # are started in no particular order, so one sent with them may take a slot first.
            while node.resuming < control.MAX_INFLIGHT:
                await trio.sleep(0.01)
        await raw.send(b'{"id": "late", "op": "info"}\n')
        with trio.fail_after(WAIT):
            # The server (in this process) has done all it will do with what it was sent: had
            # it run the late request, its reply would be waiting for us now.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert node.resuming == control.MAX_INFLIGHT
        with trio.move_on_after(0.5):
            got = await raw.read()
            pytest.fail(f"a request ran beyond the in-flight limit: {got}")


async def test_subscribe_with_replay_gets_earlier_events(tmp_path: Path) -> None:
    async with serving(tmp_path) as (path, node, _):
        before = ev.PeerConnected(peer_id=OTHER, direction="inbound", addr="/ip4/1.2.3.4/tcp/1")
        node.bus.publish(before)
        with trio.fail_after(WAIT):
            async with await RemoteNode.connect(path) as remote:
                async with remote.events(replay=True) as events:
                    got = [e async for e in _take(events, 2, lambda: node.bus.publish(
                        ev.HolePunch(peer_id=OTHER, outcome=str(Outcome.SUCCESS), attempts=1, ms=20.0)))]
                    assert got[0] == before
                    assert isinstance(got[1], ev.HolePunch) and got[1].outcome == "SUCCESS"
                async with remote.events(replay=False) as events:
                    later = ev.PeerDisconnected(peer_id=OTHER)
                    node.bus.publish(later)
                    assert await events.__anext__() == later  # no replay: the backlog is skipped


async def _take(events: AsyncIterator[ev.Event], n: int, after_first: object) -> AsyncIterator[ev.Event]:
    async for event in events:
        yield event
        n -= 1
        if n == 0:
            return
        if callable(after_first):
            after_first()
            after_first = None


async def test_kinds_filter_and_unsubscribe(tmp_path: Path) -> None:
    async with serving(tmp_path) as (path, node, _), Raw.open(path) as raw:
        await raw.read()
        await raw.send(b'{"id": 1, "op": "subscribe", "args": {"kinds": ["disconnected"]}}\n')
        assert (await raw.read())["result"] == {"subscribed": True}
        node.bus.publish(ev.PeerConnected(peer_id=OTHER, direction="inbound", addr="a"))
        node.bus.publish(ev.PeerDisconnected(peer_id=OTHER))
        msg = await raw.read()
        assert msg["type"] == "event" and msg["event"]["event"] == "disconnected"  # type: ignore[index]
        await raw.send(b'{"id": 2, "op": "unsubscribe"}\n')
        assert (await raw.read())["result"] == {"subscribed": False}
        node.bus.publish(ev.PeerDisconnected(peer_id=OTHER))
        await raw.send(b'{"id": 3, "op": "info"}\n')
        assert (await raw.read())["id"] == 3  # the reply, no event in between
        await raw.send(b'{"id": 4, "op": "subscribe", "args": {"replay": "yes"}}\n')
        assert (await raw.read())["error"]["code"] == "bad_args"  # type: ignore[index]


async def test_a_slow_client_gets_drop_notices(tmp_path: Path) -> None:
    """The node never waits for a subscriber: what did not fit is counted and reported."""
    burst = 500
    async with serving(tmp_path, FakeNode(event_buffer=4)) as (path, node, _):
        async with Raw.open(path) as raw:
            await raw.read()
            await raw.send(b'{"id": 1, "op": "subscribe"}\n')
            assert (await raw.read())["ok"]
            for i in range(burst):  # faster than anyone reads: no checkpoint in between
                node.bus.publish(ev.ErrorEvent(message=f"e{i}"))
            node.bus.publish(ev.PeerDisconnected(peer_id=OTHER))  # something after the burst
            seen, dropped = 0, 0
            while seen + dropped < burst:
                msg = await raw.read()
                if msg["type"] == "dropped":
                    dropped += int(msg["count"])  # type: ignore[call-overload]
                else:
                    seen += 1
            assert dropped > 0 and seen >= 1
        with trio.fail_after(WAIT):
            async with await RemoteNode.connect(path) as remote, remote.events(replay=False) as events:
                for i in range(burst):
                    node.bus.publish(ev.ErrorEvent(message=f"e{i}"))
                lost = [e async for e in _until_lost(events)]
                assert lost and "lost" in lost[-1].message and lost[-1].where == "events"  # type: ignore[attr-defined]
                assert getattr(events, "dropped", 0) > 0


async def _until_lost(events: AsyncIterator[ev.Event]) -> AsyncIterator[ev.Event]:
    async for event in events:
        if isinstance(event, ev.ErrorEvent) and event.where == "events":
            yield event
            return


async def test_socket_problems(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    published: list[ev.Event] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            # the default socket only warns (the node runs on without it)...
            got = await nursery.start(partial(control.serve, FakeNode(), data_dir=deep, publish=published.append))
            assert got is None
            assert isinstance(published[0], ev.ErrorEvent) and "too long" in published[0].message
            # ...an explicitly asked-for one must work
            with pytest.raises(api.NodeError, match="too long"):
                await control.serve(FakeNode(), data_dir=tmp_path, path=deep / "c.sock", publish=published.append)
        async with serving(tmp_path) as (path, _node, _):
            with pytest.raises(api.NodeError, match="in use"):
                await control.serve(FakeNode(), data_dir=tmp_path, path=path, publish=published.append)
            assert control.find_sockets(tmp_path) == [path]
            assert control.choose_socket_path(tmp_path) == tmp_path / f"control-{os.getpid()}.sock"
