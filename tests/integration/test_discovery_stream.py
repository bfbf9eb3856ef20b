"""A dialer connects to a provider as soon as a DHT answer names it, on real in-process
nodes over 127.0.0.1, while a silent peer (a TCP port that accepts and never speaks) sits
among the closest peers of its lookup and holds the lookup for its dial deadline."""

from __future__ import annotations

import functools
from pathlib import Path

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from punch_net.config import NodeConfig
from punch_net.node import Node
from punch_net.p2p.identity import new_identity
from punch_net.roles.dialer import discover_and_connect

DIAL_TIMEOUT = 8.0


def config(role: str, tmp: Path, **kw: object) -> NodeConfig:
    cfg = NodeConfig(role=role, listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True,
                     data_dir=tmp / f"data-{role}", dial_timeout=DIAL_TIMEOUT)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


async def hold(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def test_dialer_connects_before_its_lookup_ends(tmp_path: Path) -> None:
    namespace = "stream-test"
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        silent_addr = Multiaddr(f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}")
        boot = Node(config("server", tmp_path))
        await nursery.start(boot.run)
        listener = Node(config("listener", tmp_path, bootstrap=[boot.listen_addrs()[0]]))
        await nursery.start(listener.run)
        with trio.fail_after(30):
            await listener.bootstrapped.wait()
            assert await listener.provide_namespace(namespace)

        dialer = Node(config("dialer", tmp_path, bootstrap=[boot.listen_addrs()[0]]))
        await nursery.start(dialer.run)
        with trio.fail_after(30):
            await dialer.bootstrapped.wait()
        silent = ID.from_pubkey(new_identity().public_key)  # in the dialer's table, never answers
        dialer.host.get_peerstore().add_addrs(silent, [silent_addr], 3600)
        assert await dialer.dht.routing_table.add_peer(PeerInfo(silent, [silent_addr]))

        peers: dict[ID, None] = {}
        found = trio.Event()
        start = trio.current_time()
        nursery.start_soon(discover_and_connect, dialer, namespace, peers, found)
        with trio.fail_after(30):
            await found.wait()
        took = trio.current_time() - start
        assert list(peers) == [listener.peer_id]
        # the old dialer waited for the lookup to end: the silent peer's dial deadline
        assert took < DIAL_TIMEOUT / 2, f"connected after {took:.1f} s"
        nursery.cancel_scope.cancel()
