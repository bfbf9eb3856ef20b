"""The DHT diagnostics of the NodeAPI (`dht_provide`, `dht_find_providers`, `dht_refresh`,
`health`) on three in-process nodes on 127.0.0.1: provide on one, look up from another,
in-process (`LocalNode`), over a control socket (`RemoteNode`) and over a plain trio
stream (`serve_stream` / `RemoteNode.from_stream`, what `punch testnet` does over a
child's pipes): the same typed results everywhere."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from punch_net import api
from punch_net.config import NodeConfig
from punch_net.ops import control
from punch_net.ops.remote import RemoteNode
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.runtime import Runtime

quiet_libp2p_logging()

WAIT = 30  # seconds: every network wait in this file is bounded


def config(tmp: Path, name: str, bootstrap: list[str]) -> NodeConfig:
    return NodeConfig(role="server", listen_addr="127.0.0.1", port=0, bootstrap=bootstrap, ephemeral=True,
                      data_dir=tmp / name, dial_timeout=5)


@asynccontextmanager
async def three_nodes(tmp: Path) -> AsyncIterator[tuple[Runtime, Runtime, Runtime]]:
    """A bootstrap node and two nodes bootstrapped to it, all running until the block ends."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            boot = Runtime(config(tmp, "boot", []))
            await nursery.start(boot.run)
            addr = next(a for a in boot.node.listen_addrs() if "/ip4/127.0.0.1/" in a)
            b = Runtime(config(tmp, "b", [addr]))
            c = Runtime(config(tmp, "c", [addr]))
            await nursery.start(b.run)
            await nursery.start(c.run)
            await b.node.bootstrapped.wait()
            await c.node.bootstrapped.wait()
        yield boot, b, c
        nursery.cancel_scope.cancel()


def same_lookup(a: api.ProviderLookup, b: api.ProviderLookup) -> None:
    """Equal apart from the timings (two lookups never take the same time)."""
    assert type(a) is type(b) is api.ProviderLookup
    assert a.providers == b.providers
    assert (a.steps is None) == (b.steps is None)


async def test_provide_on_one_find_from_another_local_remote_and_stream(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as (_boot, b, c):
        with trio.fail_after(WAIT):
            provided = await b.api.dht_provide("dht-api-test")
        assert isinstance(provided, api.DHTProvideResult) and provided.ok and provided.ms > 0
        me = str(b.node.peer_id)

        with trio.fail_after(WAIT):
            local = await c.api.dht_find_providers("dht-api-test", count=1)
        assert local.providers == [me] and local.steps is None and local.lag_max_ms is None

        async with trio.open_nursery() as nursery:
            with trio.fail_after(WAIT):
                path = await nursery.start(partial(control.serve, c.api, data_dir=tmp_path,
                                                   publish=lambda event: None, path=tmp_path / "c.sock"))
                async with await RemoteNode.connect(path) as remote:
                    over_socket = await remote.dht_find_providers("dht-api-test", count=1)
                    traced = await remote.dht_find_providers("dht-api-test", count=1, trace=True)
                    remote_health = await remote.health()
            nursery.cancel_scope.cancel()
        same_lookup(local, over_socket)
        assert traced.providers == [me] and traced.steps is not None and traced.lag_total_ms is not None
        assert all(isinstance(step, api.LookupStep) for step in traced.steps)

        local_health = await c.api.health()
        assert type(remote_health) is type(local_health) is api.Health
        moving = {"rss_bytes": 0, "uptime_s": 0.0, "connections": 0, "routing_table_size": 0}
        assert dataclasses.replace(remote_health, **moving) == dataclasses.replace(local_health, **moving)
        assert local_health.peer_id == str(c.node.peer_id) and local_health.bootstrapped
        assert local_health.rss_bytes > 0 and local_health.routing_table_size >= 1

        # The same protocol over any trio stream: a memory pair stands in for a child's pipes.
        near, far = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(control.serve_stream, c.api, far)
            streamed_node = RemoteNode.from_stream(near, "memory")
            with trio.fail_after(WAIT):
                streamed = await streamed_node.dht_find_providers("dht-api-test", count=1)
                assert streamed_node.hello.get("peer_id") == str(c.node.peer_id)
                await streamed_node.aclose()  # the server ends when its client closes
        same_lookup(local, streamed)


async def test_refresh_and_argument_bounds(tmp_path: Path) -> None:
    async with three_nodes(tmp_path) as (_boot, b, c):
        with trio.fail_after(WAIT):
            assert (await b.api.dht_provide("refresh-me")).ok
            refreshed = await b.api.dht_refresh()
        assert isinstance(refreshed, api.RefreshResult)
        assert refreshed.after >= 1 and refreshed.reprovided >= 1 and refreshed.lookups >= 1

        for kwargs in ({"count": 0}, {"count": 101}, {"timeout": 30.5}, {"timeout": 0.0}):
            with pytest.raises(api.NodeError) as bad:
                await c.api.dht_find_providers("k", **kwargs)  # type: ignore[arg-type]
            assert bad.value.code == "bad_args"
        with pytest.raises(api.NodeError) as bad:
            await c.api.dht_provide("x" * 257)
        assert bad.value.code == "bad_args"


async def test_health_before_the_node_runs_is_not_running(tmp_path: Path) -> None:
    rt = Runtime(config(tmp_path, "idle", []))
    with pytest.raises(api.NotRunning):
        await rt.api.health()
