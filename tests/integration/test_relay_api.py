"""Relay operations of the NodeAPI: reserve on a relay at run time (as --relay does at
start), see the reservation and the circuit address it gives, then release it. Two
in-process nodes on 127.0.0.1; every wait bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from punch_net import events as ev
from punch_net.api import NodeError
from punch_net.config import NodeConfig
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.runtime import Runtime

quiet_libp2p_logging()

WAIT = 30


def config(tmp: Path, name: str, role: str) -> NodeConfig:
    return NodeConfig(role=role, listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True,
                      data_dir=tmp / name, dial_timeout=3)


async def test_reserve_then_release_a_relay_at_run_time(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            relay = Runtime(config(tmp_path, "relay", "server"))
            node = Runtime(config(tmp_path, "node", "listener"))
            await nursery.start(relay.run)
            await nursery.start(node.node.run)  # the kernel and its components, no role main
            relay_addr = relay.node.listen_addrs()[0]
            assert (await node.api.relay_status()).reservations == []
            async with node.api.events(replay=False) as events:
                status = await node.api.relay_reserve(relay_addr)
                assert [h.relay_addr for h in status.reservations] == [relay_addr]
                async for event in events:
                    if isinstance(event, ev.Reservation):
                        break
            held = (await node.api.relay_status()).reservations[0]
            assert held.state == "active" and held.circuit_addrs
            assert set(held.circuit_addrs) <= set(node.node.listen_addrs())  # advertised
            assert (await node.api.relay_reserve(relay_addr)).reservations[0].renewals == held.renewals  # kept

            status = await node.api.relay_release(relay_addr)
            assert status.reservations == [] and status.circuit_addrs == []
            assert not set(held.circuit_addrs) & set(node.node.listen_addrs())
            with pytest.raises(NodeError, match="no reservation"):
                await node.api.relay_release(relay_addr)
            with pytest.raises(NodeError):
                await node.api.relay_reserve("/ip4/1.2.3/tcp/x")
        nursery.cancel_scope.cancel()
