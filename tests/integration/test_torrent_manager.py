"""The transfers data API the TUI uses (TorrentManager.snapshot/pause/resume/verify/cancel,
catalogue, add), on two real in-process nodes over 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from punch_net.config import NodeConfig
from punch_net.dht.keys import dht_key, digest_multihash
from punch_net.node import Node
from punch_net.runtime import Runtime
from punch_net.torrent.info import TransferInfo
from punch_net.torrent.manager import TorrentManager

TIMEOUT = 90.0


def config(role: str, tmp: Path, **kw: object) -> NodeConfig:
    cfg = NodeConfig(role=role, listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True,
                     data_dir=tmp / f"data-{role}", dht_mode="server")
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


async def wait_for(pred, what: str, timeout: float = TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.05)


@asynccontextmanager
async def seeder_and_two_clients(tmp_path: Path, data: bytes, name: str) -> AsyncIterator[Swarm]:
    """A bootstrap node, a seeder sharing `data` as share/NAME, and clients "a" and "b"
    (their managers do not seed), in-process; every node stops on exit."""
    share = tmp_path / "share"
    share.mkdir()
    (share / name).write_bytes(data)
    boot = Node(config("server", tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(boot.run)
        addr = boot.listen_addrs()[0]
        server = Node(config("torrent-server", tmp_path, bootstrap=[addr]))
        await nursery.start(server.run)
        smgr = TorrentManager(server, share_dir=share)
        await nursery.start(smgr.run)
        await wait_for(lambda: len(smgr.service.sources) == 1, "shared")
        nodes, managers = [], []
        for client in ("a", "b"):
            (tmp_path / client).mkdir()
            node = Node(config("torrent-client", tmp_path / client, bootstrap=[addr]))
            await nursery.start(node.run)
            mgr = TorrentManager(node, download_dir=tmp_path / client, seed=False, timeout=60)
            await nursery.start(mgr.run)
            nodes.append(node)
            managers.append(mgr)
        yield Swarm(boot, smgr, next(iter(smgr.service.sources)), nodes, managers)
        nursery.cancel_scope.cancel()


def slow_seeder(monkeypatch: pytest.MonkeyPatch, per_piece: float) -> None:
    """The seeder (serving from share/) sleeps `per_piece` s per piece read: downloads last."""
    from punch_net.torrent.service import TorrentService

    read_batch = TorrentService.read_batch

    def slow_read_batch(self: TorrentService, path: Path, meta: object, indexes: list[int]) -> list[bytes]:
        if path.parent.name == "share":
            time.sleep(per_piece * len(indexes))
        return read_batch(self, path, meta, indexes)  # type: ignore[arg-type]

    monkeypatch.setattr(TorrentService, "read_batch", slow_read_batch)


@dataclass
class Swarm:
    boot: Node
    seeder: TorrentManager
    info_hash: bytes
    nodes: list[Node]
    managers: list[TorrentManager]


async def test_manager_api_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from punch_net.torrent import transfer as transfer_module
    from punch_net.torrent.client import PeerError

    refusals: list[str] = []  # metainfo requests the client saw refused
    refused = trio.Event()
    fetch_metainfo = transfer_module.fetch_metainfo

    async def watched_fetch_metainfo(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return await fetch_metainfo(*args, **kwargs)
        except PeerError as exc:
            refusals.append(str(exc))
            if "unknown info hash" in str(exc):  # what a server that does not serve it answers
                refused.set()
            raise

    monkeypatch.setattr(transfer_module, "fetch_metainfo", watched_fetch_metainfo)
    share, dl = tmp_path / "share", tmp_path / "dl"
    share.mkdir()
    dl.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 5)
    (share / "f.bin").write_bytes(data)
    server_rt = Runtime(config("torrent-server", tmp_path, share_dir=share))  # the runtime builds the manager
    server, smgr = server_rt.node, server_rt.torrent
    assert smgr is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(smgr.run)
        await wait_for(lambda: len(smgr.service.sources) == 1, "shared")
        [seed_row] = smgr.snapshot()
        assert seed_row.direction == "seed" and seed_row.state == "seeding" and seed_row.have == seed_row.total == 49
        assert (await server_rt.api.transfers())[0].name == "f.bin"  # what the fronts see

        client_rt = Runtime(config("torrent-client", tmp_path, bootstrap=[server.listen_addrs()[0]],
                                   download_dir=dl, no_seed=False, timeout=60))
        client, cmgr = client_rt.node, client_rt.torrent
        assert cmgr is not None and cmgr.seed
        await nursery.start(client.run)
        await nursery.start(cmgr.run)
        assert "torrent" in (await client_rt.api.info()).components  # the fronts reach this manager
        with trio.fail_after(TIMEOUT):
            await client.bootstrapped.wait()
            entries = await cmgr.catalogue(timeout=30)
        assert [(e.name, e.size, e.providers) for e in entries] == [("f.bin", len(data), 1)]

        smgr.pause(seed_row.info_hash)  # the server stops serving: the download cannot start
        assert smgr.snapshot()[0].state == "paused"
        transfer = cmgr.add(bytes.fromhex(entries[0].info_hash))
        assert cmgr.add(bytes.fromhex(entries[0].info_hash)) is transfer  # one transfer per info hash
        assert [t.info_hash for t in await client_rt.api.transfers()] == [transfer.hex]
        cmgr.pause(transfer.hex)
        assert cmgr.snapshot()[0].state == "paused"
        cmgr.resume(transfer.hex)
        await wait_for(lambda: bool(transfer.providers), "the provider found")
        with trio.fail_after(TIMEOUT):  # ... and asked for the metainfo, which the paused server refuses
            await refused.wait()
        info: TransferInfo = cmgr.snapshot()[0]
        assert info.have == 0 and info.state == "finding"
        smgr.resume(seed_row.info_hash)  # a refusal is not final: the provider is asked again
        with trio.fail_after(TIMEOUT):
            await transfer.done.wait()
        info = cmgr.snapshot()[0]
        assert info.state == "seeding", info.error
        assert info.have == info.total == 49 and info.name == "f.bin" and info.path == str(dl / "f.bin")
        assert info.peers[0].peer_id == str(server.peer_id) and info.peers[0].have == 0  # its stream closed
        assert info.peers[0].pieces == 49 and info.peers[0].state != ""  # a peer we fetched from
        assert set(info.piece_sources) == {0}  # every piece from peers[0]
        assert hashlib.sha256((dl / "f.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
        assert await cmgr.verify(info.info_hash) == []
        (dl / "f.bin").write_bytes(b"tampered")
        assert await cmgr.verify(info.info_hash) != []
        assert cmgr.snapshot()[0].state == "error"
        cmgr.cancel(info.info_hash)  # stops serving it
        assert bytes.fromhex(info.info_hash) not in cmgr.service.sources
        nursery.cancel_scope.cancel()


async def test_a_provider_whose_old_address_just_failed_is_dialed_at_its_new_one(tmp_path: Path) -> None:
    """py-libp2p refuses every dial to a peer for 60 s after one failed dial (its negative
    peer cache), whatever addresses the new dial has: a dial to a provider's stale address
    (an old provider record, a restarted seeder) used to make the download fail, as its
    60 s of retries were all refused. A provider the DHT names is dialed at its addresses
    (our own RETRY_PEER_AFTER paces the retries)."""
    from libp2p.network.exceptions import SwarmException
    from libp2p.peer.peerinfo import PeerInfo
    from multiaddr import Multiaddr

    share, dl = tmp_path / "share", tmp_path / "dl"
    share.mkdir()
    dl.mkdir()
    data = os.urandom(200_000)
    (share / "g.bin").write_bytes(data)
    boot = Node(config("server", tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(boot.run)
        server = Node(config("torrent-server", tmp_path, bootstrap=[boot.listen_addrs()[0]]))
        await nursery.start(server.run)
        smgr = TorrentManager(server, share_dir=share)
        await nursery.start(smgr.run)
        await wait_for(lambda: len(smgr.service.sources) == 1, "shared")
        info_hash = next(iter(smgr.service.sources))
        key = bytes.fromhex(dht_key(digest_multihash(info_hash)))
        await wait_for(lambda: bool(boot.dht.provider_store.get_providers(key)), "announced on the boot node")

        client = Node(config("torrent-client", tmp_path, bootstrap=[boot.listen_addrs()[0]]))
        await nursery.start(client.run)
        with trio.fail_after(TIMEOUT):
            await client.bootstrapped.wait()
            if client.host.get_network().get_connections(server.peer_id):
                await client.host.disconnect(server.peer_id)
            stale = PeerInfo(server.peer_id, [Multiaddr("/ip4/127.0.0.1/tcp/9")])  # nobody listens there
            with pytest.raises(SwarmException):
                await client.host.connect(stale)
        cmgr = TorrentManager(client, download_dir=dl, seed=False, timeout=20)
        await nursery.start(cmgr.run)
        transfer = cmgr.add(info_hash)
        with trio.fail_after(40):
            await transfer.done.wait()
        assert transfer.state == "complete", transfer.error
        assert hashlib.sha256((dl / "g.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
        nursery.cancel_scope.cancel()


async def test_a_downloader_serves_what_it_has_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A downloads from a slow server, which is paused once A has a few pieces; B, started
    then, gets the metainfo and those pieces from A (a partial source: BITFIELD, HAVE),
    while A sees B as a peer downloading from it. Resumed, everyone completes."""
    slow_seeder(monkeypatch, 0.03)
    data = os.urandom(6 * 1024 * 1024 + 7)
    async with seeder_and_two_clients(tmp_path, data, "s.bin") as swarm:
        boot, smgr, info_hash, nodes = swarm.boot, swarm.seeder, swarm.info_hash, swarm.nodes
        a, b = swarm.managers
        ta = a.add(info_hash)
        await wait_for(lambda: ta.picker is not None and ta.picker.have_count() >= 8, "A's first pieces")
        smgr.pause(info_hash)  # A keeps what it has; the seeder refuses the rest for now
        assert info_hash in a.service.sources and a.service.sources[info_hash].have is not None
        key = bytes.fromhex(dht_key(digest_multihash(info_hash)))
        await wait_for(lambda: nodes[0].peer_id in {p.peer_id for p in boot.dht.provider_store.get_providers(key)},
                       "A announced as a provider")
        had = ta.picker.have_count()  # type: ignore[union-attr]
        tb = b.add(info_hash)
        await wait_for(lambda: tb.picker is not None and tb.picker.have_count() >= had, "B got A's pieces")
        row = b.snapshot()[0]
        from_a = [i for i, p in enumerate(row.peers) if p.peer_id == str(nodes[0].peer_id)]
        assert from_a and row.piece_sources.count(from_a[0]) >= had
        seen = a.snapshot()[0].peers
        assert any(p.peer_id == str(nodes[1].peer_id) and p.interested and p.up_rate > 0 for p in seen), seen
        smgr.resume(info_hash)
        with trio.fail_after(TIMEOUT):
            await ta.done.wait()
            await tb.done.wait()
        for name, t in (("a", ta), ("b", tb)):
            assert t.state == "complete", t.error
            assert hashlib.sha256((tmp_path / name / "s.bin").read_bytes()).digest() == hashlib.sha256(data).digest()


async def test_a_fellow_named_before_it_serves_is_asked_again_soon(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """B's INTERESTED reaches the seeder before B has the metainfo, and the seeder names B
    to A at once (peer exchange); A's first try finds B not serving the torrent yet
    (`unknown info hash`). A asks again every NOT_SERVING_RETRY, so it trades with B
    moments after B is ready, not after RETRY_PEER_AFTER (5 s) and a new naming (measured
    in the 1 + 4 swarm: a downloader nobody downloaded from for its first ~6 s)."""
    from punch_net.torrent import transfer as transfer_module

    slow_seeder(monkeypatch, 0.05)
    fetch_metainfo = transfer_module.fetch_metainfo
    slow_hosts: set[object] = set()

    async def late_fetch_metainfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host in slow_hosts:  # B's metainfo comes a second late
            await trio.sleep(1.0)
        return await fetch_metainfo(host, *args, **kwargs)

    monkeypatch.setattr(transfer_module, "fetch_metainfo", late_fetch_metainfo)
    async with seeder_and_two_clients(tmp_path, os.urandom(8 * 1024 * 1024), "f.bin") as swarm:
        info_hash, nodes = swarm.info_hash, swarm.nodes
        a, b = swarm.managers
        ta = a.add(info_hash)
        await wait_for(lambda: ta.picker is not None and ta.picker.have_count() >= 4, "A's first pieces")
        slow_hosts.add(nodes[1].host)
        tb = b.add(info_hash)
        b_id = str(nodes[1].peer_id)

        def a_row_of_b() -> object:
            return next((p for p in a.snapshot()[0].peers if p.peer_id == b_id), None)

        await wait_for(lambda: a_row_of_b() is not None, "A named B")
        with trio.fail_after(TIMEOUT):
            await tb.meta_ready.wait()
        ready = trio.current_time()
        await wait_for(lambda: getattr(a_row_of_b(), "state", "") == "active", "A's session with B", timeout=15)
        waited = trio.current_time() - ready
        assert waited < 2.0, (waited, a_row_of_b())
