"""TorrentManager: the torrent capability of one node, and the data API fronts use.

It serves `/punch/torrent/1.0.0` (shared files and finished downloads), keeps the share
directory indexed and announced, runs downloads, and answers `snapshot()` with one
TransferInfo per transfer. Fronts get it through the NodeAPI (`transfers()`); see docs/TORRENT.md.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from punch_net import events as ev
from punch_net.dht.keys import dht_key, digest_multihash, namespace_cid, namespace_multihash
from punch_net.node import Node
from punch_net.routing.reputation import ReputationStore
from punch_net.torrent import NAMESPACE, PROTOCOL_ID
from punch_net.torrent import events as tev
from punch_net.torrent.catalogue import SharedFile, ShareIndex
from punch_net.torrent.choker import RECHOKE_EVERY
from punch_net.torrent.client import PeerError, fetch_catalogue
from punch_net.torrent.events import human_size
from punch_net.torrent.info import CatalogueEntry, TransferInfo, TransferPeer
from punch_net.torrent.service import Source, TorrentService
from punch_net.torrent.spreader import Spreader
from punch_net.torrent.storage import existing_matches
from punch_net.torrent.transfer import Transfer

RESCAN_EVERY = 2.0
REPROVIDE_INTERVAL = 6 * 60 * 60.0
PROVIDE_RETRY = 2.0
HASH_PROGRESS_EVERY = 0.25
TICK = 1.0  # the service's housekeeping (spreading seeds' stale offers); rechoke every RECHOKE_EVERY

class TorrentManager:
    def __init__(self, node: Node, download_dir: Path | None = None, share_dir: Path | None = None,
                 seed: bool = True, timeout: float = 10.0, reputation: ReputationStore | None = None) -> None:
        self.node = node
        self.reputation = reputation  # told of peers that send corrupt pieces
        self.download_dir = download_dir
        self.share_dir = share_dir
        self.seed = seed
        self.timeout = timeout
        self.service = TorrentService(on_error=self._protocol_error, on_interested=self._peer_interested,
                                      addrs_of=self._addrs_of)
        self.transfers: dict[bytes, Transfer] = {}
        self.index: ShareIndex | None = None
        self._nursery: trio.Nursery | None = None
        self._provide_keys: dict[str, str] = {}  # dht key -> what (for errors)
        self._provide_wake = trio.Event()
        self._provided: set[str] = set()
        self.ready = trio.Event()  # set after the first share-dir scan

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve, index, announce and download until cancelled."""
        self.node.host.set_stream_handler(PROTOCOL_ID, self.service.handle_stream)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._keep_providing)
            nursery.start_soon(self._rechoke)
            if self.share_dir is not None:
                self._provide_namespace()
                nursery.start_soon(self._watch_share_dir)
            else:
                self.ready.set()
            task_status.started()
            await trio.sleep_forever()

    async def _rechoke(self) -> None:
        ticks = 0
        while True:
            await trio.sleep(TICK)
            self.service.tick()
            ticks += 1
            if ticks * TICK >= RECHOKE_EVERY:
                ticks = 0
                self.service.rechoke()

    def _peer_interested(self, info_hash: bytes, peer: ID) -> None:
        transfer = self.transfers.get(info_hash)
        if transfer is not None:
            transfer.offer_peer(peer)

    def _addrs_of(self, peer: str) -> list[str]:
        try:
            return [str(a) for a in self.node.host.get_peerstore().addrs(ID.from_base58(peer))]
        except Exception:  # unknown peer or a malformed id: nothing to tell
            return []

    def _protocol_error(self, message: str) -> None:
        self.node.bus.publish(ev.ErrorEvent(message=message, where="torrent"))

    # ------------------------------------------------------------ announcing

    def provide(self, key: str, what: str) -> None:
        if key and key not in self._provide_keys:
            self._provide_keys[key] = what
            self._provide_wake.set()

    def _provide_namespace(self) -> None:

        self.provide(dht_key(namespace_multihash(NAMESPACE)), f"namespace {NAMESPACE}")

    def _provide_info_hash(self, info_hash: bytes, name: str) -> None:
        self.provide(dht_key(digest_multihash(info_hash)), name)

    async def _keep_providing(self) -> None:
        """Provide every key once the node is bootstrapped, again after every bootstrap
        reconnection (the DHT node may have lost our records) and before records expire."""
        await self.node.bootstrapped.wait()
        epoch = self.node.bootstrap_epoch
        last_full = trio.current_time()
        while True:
            if self.node.bootstrap_epoch != epoch or trio.current_time() - last_full > REPROVIDE_INTERVAL:
                epoch = self.node.bootstrap_epoch
                last_full = trio.current_time()
                self._provided.clear()
            failed = False
            for key, what in list(self._provide_keys.items()):
                if key in self._provided:
                    continue
                ok = False
                with trio.move_on_after(self.node.config.dial_timeout * 2):
                    try:
                        ok = bool(await self.node.dht.provide(key))
                    except Exception:
                        ok = False
                if ok:
                    self._provided.add(key)
                    if what.startswith("namespace "):

                        self.node.bus.publish(ev.Registered(namespace=NAMESPACE, key=namespace_cid(NAMESPACE)))
                    else:  # an info hash: key is the hex multihash 1220 + info hash
                        self.node.bus.publish(tev.Announced(name=what, info_hash=key[4:]))
                else:
                    failed = True
            self._provide_wake = trio.Event()
            wake = self._provide_wake
            with trio.move_on_after(PROVIDE_RETRY if failed else 5.0):
                await wake.wait()

    # ------------------------------------------------------------ sharing

    async def _watch_share_dir(self) -> None:
        assert self.share_dir is not None
        cache = None if self.node.config.ephemeral else self.node.config.data_dir / "torrent-share-cache.json"
        index = self.index = ShareIndex(self.share_dir, cache)
        token = trio.lowlevel.current_trio_token()
        last = [0.0]

        def progress(name: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= HASH_PROGRESS_EVERY or done == total:
                last[0] = now
                token.run_sync_soon(self.node.bus.publish, tev.Hashing(name=name, done=done, total=total))

        def added(shared: SharedFile) -> None:
            token.run_sync_soon(self._share, shared)

        while True:
            try:
                _, removed = await trio.to_thread.run_sync(index.rescan, progress, added, abandon_on_cancel=True)  # type: ignore[call-arg]
            except OSError as exc:
                self.node.bus.publish(ev.ErrorEvent(message=f"cannot read {self.share_dir}: {exc.strerror}",
                                                    where="torrent"))
                removed = []
            await trio.sleep(0)  # let the run_sync_soon callbacks land
            for name in removed:
                for ih, src in list(self.service.sources.items()):
                    if src.meta.name == name and src.path.parent == self.share_dir:
                        self.service.remove(ih)
                        self.node.bus.publish(tev.Unshared(name=name, info_hash=ih.hex()))
            self.ready.set()
            await trio.sleep(RESCAN_EVERY)

    def _share(self, shared: SharedFile) -> None:
        meta = shared.meta
        # A shared file is the swarm's first seed: it spreads its pieces (each once before any twice).
        self.service.add(Source(meta, shared.path, spreader=Spreader(meta.num_pieces)))
        self._provide_info_hash(meta.info_hash, meta.name)
        self.node.bus.publish(tev.Shared(name=meta.name, size=meta.length, info_hash=meta.info_hash_hex))

    # ------------------------------------------------------------ downloads

    def add(self, info_hash: bytes, download_dir: Path | None = None) -> Transfer:
        """Start (or return the running) download of `info_hash`."""
        known = self.transfers.get(info_hash)
        if known is not None and known.state not in ("cancelled", "error"):
            return known
        directory = download_dir or self.download_dir
        if directory is None:
            raise ValueError("no download directory configured")
        if self._nursery is None:
            raise RuntimeError("torrent manager is not running")
        transfer = Transfer(self.node, info_hash, directory, self.timeout, self.reputation)
        transfer.on_complete.append(self._on_complete)
        transfer.on_ready.append(self._on_ready)
        transfer.on_piece.append(lambda index: self.service.have(info_hash, index))
        self.transfers[info_hash] = transfer
        self._nursery.start_soon(transfer.run)
        return transfer

    def _on_ready(self, transfer: Transfer) -> None:
        """The metainfo is known and NAME.part open: serve the verified pieces while the
        download goes on, and announce the info hash so other downloaders find us."""
        part, picker, meta = transfer.part_path(), transfer.picker, transfer.meta
        if part is None or picker is None or meta is None:
            return
        source = Source(meta, part, have=picker.have, down_rates=transfer.down_rates)
        self.service.add(source)
        transfer.serve_from(source)
        self._provide_info_hash(transfer.info_hash, meta.name)

    def _on_complete(self, transfer: Transfer) -> None:
        if transfer.meta is None:
            return
        source = transfer.uploaded_source
        if source is not None:
            source.completed(Path(transfer.path))  # streams open on the part file go on
        if not self.seed:
            self.service.remove(transfer.info_hash)
            return
        if source is None:
            source = Source(transfer.meta, Path(transfer.path))
        self.service.add(source)
        transfer.serve_from(source, seeding=True)
        self._provide_info_hash(transfer.info_hash, transfer.meta.name)
        self._provide_namespace()

    def pause(self, info_hash: str | bytes) -> None:
        """Downloads stop fetching (state paused); a shared file stops being served."""
        key = bytes.fromhex(info_hash) if isinstance(info_hash, str) else info_hash
        if key in self.transfers and self.transfers[key].state not in ("seeding", "complete"):
            self.transfers[key].pause()
        elif key in self.service.sources:
            self.service.paused.add(key)
        else:
            raise KeyError(f"no transfer {key.hex()}")

    def resume(self, info_hash: str | bytes) -> None:
        key = bytes.fromhex(info_hash) if isinstance(info_hash, str) else info_hash
        self.service.paused.discard(key)
        if key in self.transfers:
            self.transfers[key].resume()

    def cancel(self, info_hash: str | bytes) -> None:
        """Stop a download for good (NAME.part is kept: adding it again resumes); stop seeding."""
        key = bytes.fromhex(info_hash) if isinstance(info_hash, str) else info_hash
        t = self.transfers.get(key)
        self.service.remove(key)
        if t is not None and t.state not in ("seeding", "complete"):
            t.cancel()
            return
        if t is not None:
            t.state = "complete"
            t.uploaded_source = None

    async def verify(self, info_hash: str | bytes) -> list[int]:
        """Re-hash a transfer's data; returns the bad piece indexes (fetched again if downloading)."""
        key = bytes.fromhex(info_hash) if isinstance(info_hash, str) else info_hash
        t = self.transfers.get(key)
        if t is not None:
            bad = await t.verify()
            if bad and t.state == "error":  # a finished file changed on disk: stop serving it
                self.service.remove(key)
                t.uploaded_source = None
            return bad
        src = self.service.sources.get(key)
        if src is None:
            raise KeyError(f"no transfer {key.hex()}")

        ok = await trio.to_thread.run_sync(existing_matches, src.path, src.meta)
        return [] if ok else list(range(src.meta.num_pieces))

    def snapshot(self) -> list[TransferInfo]:
        """Every transfer: downloads first (in the order added), then shared files."""
        out = []
        for ih, t in self.transfers.items():
            info = t.snapshot(self.service.downloaders(ih))
            if info.state == "seeding" and ih in self.service.paused:  # finished, serving paused
                info = dataclasses.replace(info, state="paused")
            out.append(info)
        seen = set(self.transfers)
        now = time.monotonic()
        for ih, src in sorted(self.service.sources.items(), key=lambda kv: kv[1].meta.name):
            if ih in seen:
                continue
            n = src.meta.num_pieces
            serving = self.service.downloaders(ih)
            out.append(TransferInfo(
                info_hash=ih.hex(), name=src.meta.name, size=src.meta.length, have=n, total=n,
                bytes_per_s=0.0, eta_s=None, active_peers=sum(1 for m in src.peers.values() if m.rate(now) > 0),
                state="paused" if ih in self.service.paused else "seeding", direction="seed",
                path=str(src.path), uploaded=src.uploaded, upload_bytes_per_s=src.meter.rate(now),
                peers=tuple(TransferPeer(pid, 0.0, src.peers[pid].rate(now) if pid in src.peers else 0.0, 0,
                                         serving.get(pid, False), pid in serving)
                            for pid in sorted(set(src.peers) | set(serving))),
                piece_sources=(-2,) * n,
            ))
        return out

    def rows(self) -> list[dict[str, Any]]:
        """`snapshot()` flattened to one short row per transfer, for generic tables."""
        out = []
        for t in self.snapshot():
            pct = 100.0 * t.have / t.total if t.total else (100.0 if t.state in ("seeding", "complete") else 0.0)
            out.append({
                "id": t.info_hash[:16],
                "name": t.name or "(metainfo pending)",
                "state": t.state,
                "progress": f"{pct:5.1f}%",
                "size": human_size(t.size),
                "down": f"{human_size(t.bytes_per_s)}/s",
                "up": f"{human_size(t.upload_bytes_per_s)}/s",
                "eta": "-" if t.eta_s is None else f"{t.eta_s:.0f}s",
                "peers": t.active_peers,
                "error": t.error,
            })
        return out

    # ------------------------------------------------------------ catalogue

    async def catalogue(self, timeout: float | None = None) -> list[CatalogueEntry]:
        """Files offered by the torrent servers found in the DHT within `timeout` (default
        the manager's), merged by info hash with the number of servers offering each."""
        timeout = self.timeout if timeout is None else timeout
        entries: dict[str, dict[str, Any]] = {}
        providers: dict[str, set[ID]] = {}
        asked: set[ID] = set()
        # `timeout` bounds the search for servers; a server found in time still gets its
        # own request deadline (so a busy machine does not lose answers already on the way).
        async with trio.open_nursery() as asks:
            with trio.move_on_after(timeout):
                await self.node.bootstrapped.wait()
                wait = 0.25
                quiet_rounds = 0
                def ask(info: Any) -> None:  # as soon as a lookup names a server
                    if info.peer_id not in asked:
                        asked.add(info.peer_id)
                        asks.start_soon(self._ask_catalogue, info, entries, providers,
                                        max(timeout, self.node.config.dial_timeout))

                while True:
                    before = len(asked)
                    await self.node.find_peers(NAMESPACE, timeout=max(1.0, timeout / 2), on_peer=ask)
                    fresh = len(asked) > before
                    quiet_rounds = quiet_rounds + 1 if asked and not fresh else 0
                    if quiet_rounds >= 2:
                        break  # two rounds found no one new: we have heard from everyone we can find
                    await trio.sleep(wait)
                    wait = min(wait * 2, 2.0)
        return [CatalogueEntry(e["name"], e["size"], ih, len(providers[ih]))
                for ih, e in sorted(entries.items(), key=lambda kv: (kv[1]["name"], kv[0]))]

    async def _ask_catalogue(self, info: Any, entries: dict[str, dict[str, Any]],
                             providers: dict[str, set[ID]], timeout: float) -> None:
        try:
            await self.node.connect_peer(info)
        except Exception:
            self.node.bus.publish(ev.ErrorEvent(
                message=f"torrent server {info.peer_id} unreachable (a stale DHT record?)", where="torrent"))
            return
        try:
            got = await fetch_catalogue(self.node.host, info.peer_id, timeout)
        except (PeerError, Exception) as exc:
            self.node.bus.publish(ev.ErrorEvent(message=f"catalogue from {info.peer_id}: {exc}", where="torrent"))
            return
        for e in got:
            entries.setdefault(e["info_hash"], e)
            providers.setdefault(e["info_hash"], set()).add(info.peer_id)
