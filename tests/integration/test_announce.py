"""--announce replaces what a node advertises everywhere it is read: identify (the peer's
peerstore), the DHT provider records others find, and the Listening event's "others should
use" list; --no-announce filters."""

from __future__ import annotations

import socket
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.network.exceptions import SwarmException
from libp2p.peer.peerinfo import PeerInfo
from punch_harness import libp2p_host, peer_info_of

from punch_net import events as ev
from punch_net.config import NodeConfig
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.runtime import Runtime

quiet_libp2p_logging()

WAIT = 40
PUBLIC = "/ip4/203.0.113.7/tcp/4001"


def config(tmp: Path, name: str, role: str, bootstrap: list[str], **kw: object) -> NodeConfig:
    cfg = NodeConfig(role=role, listen_addr="127.0.0.1", port=0, bootstrap=bootstrap, ephemeral=True,
                     data_dir=tmp / name, dial_timeout=3, relay_service=False, namespace="ann")
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


async def test_announced_address_in_identify_provider_records_and_listening(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            boot = Runtime(config(tmp_path, "boot", "server", []))
            await nursery.start(boot.run)
            addr = boot.node.listen_addrs()[0]
            lis = Runtime(config(tmp_path, "lis", "listener", [addr], announce=[PUBLIC, "/ip4/127.0.0.1/tcp/9"],
                                 no_announce=["/ip4/127.0.0.0/ipcidr/8"]))
            await nursery.start(lis.run)
            me = f"/p2p/{lis.node.peer_id}"
            assert lis.node.listen_addrs() == [PUBLIC + me]
            status = await lis.api.relay_status()
            assert status.reachable_as == "announced" and status.announced_addrs == [PUBLIC, "/ip4/127.0.0.1/tcp/9"]
            assert status.reachable_since is not None
            listening = [e for e in lis.node.bus.backlog() if isinstance(e, ev.Listening)]
            assert listening and listening[0].addrs == [PUBLIC + me]
            await lis.node.bootstrapped.wait()
            # identify: the bootstrap node learnt the announced address, not 127.0.0.1
            while True:
                known = [str(a) for a in boot.node.host.get_peerstore().addrs(lis.node.peer_id)]
                if PUBLIC + me in known:
                    break
                await trio.sleep(0.05)
            assert not any("127.0.0.1" in a for a in known), known
            # the provider record another node finds carries the announced address
            dialer = Runtime(config(tmp_path, "dialer", "dialer", [addr]))
            await nursery.start(dialer.run)
            await dialer.node.bootstrapped.wait()
            while True:
                found = {p.peer_id: p for p in await dialer.api.find_peers("ann", timeout=5)}
                if str(lis.node.peer_id) in found:
                    break
                await trio.sleep(0.2)
            assert [a.removesuffix(me) for a in found[str(lis.node.peer_id)].addrs] == [PUBLIC], found
        nursery.cancel_scope.cancel()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_bug_one_tcp_address_dialed_fix_every_advertised_address_in_order(tmp_path: Path) -> None:
    """py-libp2p dials one TCP address per peer, the oldest known: a dead first address
    means no connection (bug); the kernel's connect_peer dials them in order (fix)."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            target = Runtime(config(tmp_path, "target", "server", []))
            plain = Runtime(config(tmp_path, "plain", "server", []))
            fixed = Runtime(config(tmp_path, "fixed", "server", []))
            for rt in (target, plain, fixed):
                await nursery.start(rt.run)
            peer = target.node.peer_id
            dead = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{closed_port()}")
            live = multiaddr.Multiaddr(target.node.listen_addrs()[0].split("/p2p/")[0])
            with pytest.raises(SwarmException):
                await plain.node.host.connect(PeerInfo(peer, [dead, live]))
            assert not plain.node.host.get_network().get_connections(peer)
            await fixed.node.connect_peer(PeerInfo(peer, [dead, live]))
            assert fixed.node.host.get_network().get_connections(peer)
        nursery.cancel_scope.cancel()


async def test_a_new_address_reaches_connected_peers_by_identify_push(tmp_path: Path) -> None:
    """A port mapping or observed address that appears later is announced in an
    addrs_changed event and pushed to connected peers (identify/push): a plain py-libp2p
    peer, which exchanges nothing else with us, learns it."""
    mapped = "/ip4/198.51.100.77/tcp/4001"
    async with trio.open_nursery() as nursery, libp2p_host() as peer:
        with trio.fail_after(WAIT):
            node = Runtime(config(tmp_path, "node", "server", []))
            await nursery.start(node.run)
            me = f"/p2p/{node.node.peer_id}"
            await peer.connect(peer_info_of(node.node.listen_addrs()[0]))
            store = peer.get_peerstore()
            while not store.get_protocols(node.node.peer_id):  # identify done
                await trio.sleep(0.05)
            node.node.addresses.set_mapped([multiaddr.Multiaddr(mapped)])
            changed = [e for e in node.node.bus.backlog() if isinstance(e, ev.AddrsChanged)]
            assert changed and changed[-1].addrs[0] == mapped + me
            while mapped + me not in [str(a) for a in store.addrs(node.node.peer_id)]:
                await trio.sleep(0.05)
            assert (await node.api.relay_status()).reachable_as == "port-mapped"
        nursery.cancel_scope.cancel()


async def test_alone_listener_says_could_not_announce_once(tmp_path: Path) -> None:
    """A listener with no DHT peer retries its announcement every 2 s, but says so once
    (then with a count every so often), not every 2 s."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            lis = Runtime(config(tmp_path, "alone", "listener", []))
            await nursery.start(lis.run)
            await lis.node.bootstrapped.wait()
            await trio.sleep(5.0)  # covers the first try and two retries
            said = [e for e in lis.node.bus.backlog() if isinstance(e, ev.ErrorEvent) and e.where == "provide"]
            assert len(said) == 1, [e.message for e in said]
            assert "could not announce 'ann' yet" in said[0].message
            nursery.cancel_scope.cancel()
