"""Dialing by peer id alone (NodeAPI.dial): a peer we have never dialed is looked up in the
DHT and connected; an id nobody knows is one clear error, within the dial timeout."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID

from punch_net import events as ev
from punch_net.api import NodeError
from punch_net.config import NodeConfig
from punch_net.ops import control
from punch_net.ops.remote import RemoteNode
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.p2p.identity import new_identity
from punch_net.runtime import Runtime

quiet_libp2p_logging()

WAIT = 30


async def dial_steps(sub: ev.Subscription) -> list[ev.DialProgress]:
    """The DialProgress events queued on `sub` (all of them are published before dial returns)."""
    out = []
    while True:
        with trio.move_on_after(0.2):
            e = await sub.receive()
            if isinstance(e, ev.DialProgress):
                out.append(e)
            continue
        return out


def config(tmp: Path, name: str, role: str, bootstrap: list[str], dht_mode: str = "auto") -> NodeConfig:
    return NodeConfig(role=role, listen_addr="127.0.0.1", port=0, bootstrap=bootstrap, ephemeral=True,
                      data_dir=tmp / name, dial_timeout=3, relay_service=False, dht_mode=dht_mode)


async def test_dial_a_bare_peer_id_found_through_the_dht(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            boot = Runtime(config(tmp_path, "boot", "server", []))
            await nursery.start(boot.run)
            addr = boot.node.listen_addrs()[0]
            target = Runtime(config(tmp_path, "target", "server", [addr]))
            dialer = Runtime(config(tmp_path, "dialer", "server", [addr]))
            await nursery.start(target.run)
            await nursery.start(dialer.run)
            await target.node.bootstrapped.wait()
            await dialer.node.bootstrapped.wait()
            peer = str(target.node.peer_id)
            assert not dialer.node.host.get_network().get_connections(target.node.peer_id)
            for text in (peer, f"/p2p/{peer}"):
                with dialer.node.bus.subscribe() as sub:
                    assert await dialer.api.dial(text) == peer
                    steps = await dial_steps(sub)
                # each step is published: where it was looked for, then the dial
                # (a DHT lookup adds one "lookup" step when the routing table and peerstore had nothing)
                assert [s.stage for s in steps][-3:] == ["lookup", "dialing", "connected"]
                assert steps[0].tried[0] == "routing_table" and steps[-1].peer_id == peer
                assert steps[-3].found_in == steps[-3].tried[-1] and steps[-3].addrs
                assert dialer.node.host.get_network().get_connections(target.node.peer_id)
                await dialer.api.disconnect(peer)
            assert (await dialer.api.ping(peer)) > 0  # reconnects by id on its own
        nursery.cancel_scope.cancel()


async def test_dial_an_unknown_peer_id_is_one_line_within_the_timeout(tmp_path: Path) -> None:
    stranger = str(ID.from_pubkey(new_identity().public_key))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            boot = Runtime(config(tmp_path, "boot", "server", []))
            await nursery.start(boot.run)
            dialer = Runtime(config(tmp_path, "dialer", "server", [boot.node.listen_addrs()[0]]))
            await nursery.start(dialer.run)
            await dialer.node.bootstrapped.wait()
            started = trio.current_time()
            with dialer.node.bus.subscribe() as sub:
                with pytest.raises(NodeError) as err:
                    await dialer.api.dial(stranger)
                steps = await dial_steps(sub)
            assert [s.tried for s in steps] == [["routing_table", "peerstore", "dht"]] * 2
            assert steps[-1].stage == "failed" and steps[-1].error == str(err.value)
            assert stranger in str(err.value) and "\n" not in str(err.value)
            assert trio.current_time() - started < dialer.config.dial_timeout + 5
        nursery.cancel_scope.cancel()


async def test_an_attached_client_dials_a_dht_client_by_id_and_sees_each_step(tmp_path: Path) -> None:
    """Over the control socket (as `punch-tui --attach` does): the target is a DHT client, so
    only the server it is connected to can name its addresses; the steps arrive as events."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            boot = Runtime(config(tmp_path, "boot", "server", []))
            await nursery.start(boot.run)
            addr = boot.node.listen_addrs()[0]
            target = Runtime(config(tmp_path, "target", "server", [addr], dht_mode="client"))
            dialer = Runtime(config(tmp_path, "dialer", "server", [addr], dht_mode="client"))
            await nursery.start(target.run)
            await nursery.start(dialer.run)
            await target.node.bootstrapped.wait()
            await dialer.node.bootstrapped.wait()
            peer = str(target.node.peer_id)
            assert not boot.node.dht.routing_table.peer_in_table(target.node.peer_id)
            path = await nursery.start(partial(control.serve, dialer.api, data_dir=tmp_path / "ctl",
                                               publish=lambda e: None))
            async with await RemoteNode.connect(path) as remote, remote.events(replay=False) as events:
                assert await remote.dial(peer) == peer
                steps = []
                async for e in events:
                    if isinstance(e, ev.DialProgress):
                        steps.append(e)
                        if e.stage == "connected":
                            break
            assert [(s.stage, s.found_in) for s in steps] == [
                ("lookup", ""), ("lookup", "dht"), ("dialing", "dht"), ("connected", "dht")]
            assert steps[0].tried == ["routing_table", "peerstore", "dht"]
            port = target.node.listen_addrs()[0].split("/tcp/")[1].split("/")[0]
            assert any(f"/tcp/{port}" in a for a in steps[1].addrs), steps[1].addrs  # the server named it
        nursery.cancel_scope.cancel()
