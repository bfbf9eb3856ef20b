"""One download: find providers in the DHT, fetch and check the metainfo, fetch pieces
from every provider at once (pipelined, rarest first, endgame at the end), verify each
piece before writing it, keep a resume record, verify the whole file and rename it.

A Transfer is driven by `run()` in a nursery the TorrentManager owns; the manager's
pause/resume/cancel/verify call the methods here, and `snapshot()` feeds the fronts.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from punch_net import events as ev
from punch_net.dht.keys import dht_key, digest_multihash
from punch_net.groups import first_error
from punch_net.node import Node
from punch_net.p2p.patches.dial_failure_cache import forget_dial_failure
from punch_net.p2p.patches.yamux_read_stream import hand_over_buffer
from punch_net.p2p.patches.yamux_window import grow_receive_window
from punch_net.p2p.patches.yamux_window_halves import release_in_halves
from punch_net.p2p.streams import reset_quietly
from punch_net.routing.reputation import ReputationStore
from punch_net.torrent import events as tev
from punch_net.torrent import wire
from punch_net.torrent.client import (
    COALESCE_BELOW,
    READ_SIZE,
    BadMetainfo,
    NotServing,
    PeerError,
    fetch_metainfo,
    open_stream,
)
from punch_net.torrent.info import TransferInfo, TransferPeer
from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.peer_session import (
    Action,
    Cancel,
    Changed,
    Close,
    DownloadSession,
    PeerBad,
    PeerCounters,
    Peers,
    Store,
    Verify,
    Wake,
)
from punch_net.torrent.picker import PiecePicker
from punch_net.torrent.rates import RateMeter, eta_seconds
from punch_net.torrent.service import Source
from punch_net.torrent.storage import PartFile, StorageError, WholeHasher, existing_matches, sha256_file

# After a small read, wait this long so more frames pile up: py-libp2p sends a yamux
# WINDOW_UPDATE (an encrypted frame) per read, so fewer, larger reads cut client CPU by
# ~20% and the server's too (measured: 256 MiB, 2.2 -> 1.85 s client user CPU). Only
# while one peer is sending: with several, the others' frames fill the wait, and the wait
# cost the 3-server download ~8% (A/B, 4 runs each: 0.90 -> 0.83 s).
READ_COALESCE = 0.003
RECEIVE_WINDOW = 16 << 20  # yamux window per peer stream: well above DEPTH pieces, so a server never waits for credit
PEER_STALL = 30.0  # a peer with requests outstanding that sends nothing this long is dropped
RETRY_PEER_AFTER = 5.0
# A provider we cannot dial is tried again after 5, 10, 20 ... s, at most this: provider
# records outlive their peers (and an --ephemeral peer's address is soon another peer's,
# whose handshake then fails on the ID: TCP and Noise on both sides, at every retry).
RETRY_DEAD_PEER_MAX = 120.0
# A fellow downloader is named to us (peer exchange, its INTERESTED) as soon as it asks
# for the torrent, before it has the metainfo and serves it: while it answers "unknown
# info hash", ask again this often, for this long (not RETRY_PEER_AFTER and a new naming).
NOT_SERVING_RETRY = 0.5
NOT_SERVING_FOR = 10.0
METAINFO_RETRY = 2.0  # a provider whose metainfo request failed (not a bad answer) is asked again after this
DISCOVERY_MIN = 0.5
DISCOVERY_MAX = 3.0  # fellow downloaders announce themselves during the download: look again often
CHECKPOINT_EVERY = 1.0
PROGRESS_EVERY = 0.5
HASH_STEP = 16 << 20  # bytes the whole-file hash takes in per thread call while downloading
# How often the whole-file hash looks for a longer verified prefix (pieces do not wake it):
# what it has not taken in when the last piece lands is hashed before `complete`.
HASH_LOOK_EVERY = 0.25


def retry_after(dial_failures: int) -> float:
    """Seconds before a provider whose last session ended is tried again: RETRY_PEER_AFTER,
    doubled for each failed dial in a row after the first, up to RETRY_DEAD_PEER_MAX."""
    return min(RETRY_DEAD_PEER_MAX, RETRY_PEER_AFTER * 2.0 ** max(0, dial_failures - 1))


class TransferError(Exception):
    """The download cannot go on; one line for humans."""


class BadPeer(Exception):
    """The peer sent a piece that failed its hash."""


@dataclass
class _Peer(PeerCounters):
    peer_id: ID
    row: int  # its index in TransferInfo.peers, which lists the peers we fetch from first, in this order
    state: str = "connecting"
    error: str = ""
    ended_at: float = 0.0
    scope: trio.CancelScope | None = None  # the session; cancelled when the peer is marked bad
    wake: trio.Event = field(default_factory=trio.Event)  # its requester has room to fill
    session: DownloadSession | None = None  # while a stream is open: other peers' cancels go to it
    early_asks: tuple[int, ...] = ()  # pieces requested on its early stream, before the metainfo
    early_at: float = 0.0  # when (time.monotonic())
    dial_failures: int = 0  # dials in a row that failed (reset by one that works)


class Transfer:
    def __init__(self, node: Node, info_hash: bytes, download_dir: Path, timeout: float = 10.0,
                 reputation: ReputationStore | None = None) -> None:
        self.node = node
        self.reputation = reputation
        self.info_hash = info_hash
        self.hex = info_hash.hex()
        self.download_dir = download_dir
        self.timeout = timeout
        self.meta: Metainfo | None = None
        self.part: PartFile | None = None
        self.picker: PiecePicker | None = None
        self.piece_sources: list[int] = []  # TransferInfo.piece_sources: -1 missing, -2 from disk, else a peer's row
        self.state = "finding"
        self.error = ""
        self.path = ""
        self.sha256 = ""
        self.meter = RateMeter()
        self.peers: dict[ID, _Peer] = {}
        self.sessions: set[ID] = set()
        self._peer_tasks_started = 0
        self.banned: set[ID] = set()
        self.providers: dict[ID, PeerInfo] = {}
        self.meta_ready = trio.Event()
        self.done = trio.Event()
        self._changed = trio.Event()
        self._unpaused = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._paused = False
        self._cancelled = False
        self._last_checkpoint_have = -1
        self.resumed = 0
        self.started = 0.0  # monotonic time the metainfo was known (the transfer began)
        self.on_complete: list[Callable[[Transfer], None]] = []  # once the file is in place
        self.on_ready: list[Callable[[Transfer], None]] = []  # NAME.part is open: serve and announce it
        self.on_piece: list[Callable[[int], None]] = []  # a piece was verified and stored (HAVE it)
        self._asked_early = False  # the first early stream has asked for piece 0
        self._readers = 0  # peer sessions reading pieces now (READ_COALESCE applies to one)
        self.uploaded_source: Source | None = None
        self._whole = WholeHasher()  # SHA-256 of the file's verified prefix, fed by _hash_in_order
        self._hashed_upto = 0  # bytes of the file in self._whole
        self._hash_lock = trio.Lock()  # one thread at a time feeds self._whole

    # ------------------------------------------------------------ control

    def pause(self) -> None:
        if self.state in ("complete", "seeding", "cancelled", "error") or self._paused:
            return
        self._paused = True
        self._unpaused = trio.Event()
        self.state = "paused"
        if self._scope is not None:
            self._scope.cancel()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._unpaused.set()

    def cancel(self) -> None:
        """Stop for good; NAME.part and its resume record stay, so adding it again resumes."""
        if self.state in ("complete", "seeding"):
            return
        self._cancelled = True
        self.state = "cancelled"
        self._unpaused.set()
        if self._scope is not None:
            self._scope.cancel()

    async def verify(self) -> list[int]:
        """Re-hash what we claim to have; bad pieces are fetched again. Returns them."""
        if self.meta is None:
            return []
        if self.state in ("complete", "seeding"):
            before = self.state
            self.state = "verifying"
            ok = await trio.to_thread.run_sync(existing_matches, Path(self.path), self.meta)
            self.state = before if ok else "error"
            if not ok:
                self.error = f"{self.path} no longer matches its metainfo"
            return [] if ok else list(range(self.meta.num_pieces))
        picker = self.picker
        if picker is None or self.part is None:
            return []
        claimed = {i for i in range(self.meta.num_pieces) if picker.have[i]}
        part = self.part
        before = self.state
        self.state = "verifying"
        try:
            bad = [i for i in await trio.to_thread.run_sync(part.verify_all) if i in claimed]
        finally:
            if self.state == "verifying":
                self.state = before
        for i in bad:
            picker.unverify(i)
            self.piece_sources[i] = -1
        if bad and bad[0] < self._hashed_upto:  # the whole-file hash took in bytes now known bad
            self._whole = WholeHasher()
            self._hashed_upto = 0
        self._notify()
        return bad

    def serve_from(self, source: Source | None, seeding: bool = False) -> None:
        """The manager serves this transfer's pieces from `source` (upload figures come from it)."""
        self.uploaded_source = source
        if seeding:
            self.state = "seeding"

    def part_path(self) -> Path | None:
        return self.part.part if self.part is not None else None

    def down_rates(self) -> dict[str, float]:
        """Bytes/s each peer gives us now (the choker's tit-for-tat ranking)."""
        now = time.monotonic()
        return {str(pid): p.meter.rate(now) for pid, p in self.peers.items()}

    def offer_peer(self, pid: ID) -> None:
        """A peer asked us for this torrent: it downloads it too, so ask it for pieces
        (it serves what it has). Sooner than waiting for the DHT to name it."""
        if self.picker is None or self._nursery is None or self.state != "downloading":
            return
        try:
            addrs = self.node.host.get_peerstore().addrs(pid)
        except Exception:
            addrs = []
        self._offer_provider(PeerInfo(pid, addrs))

    def _offer_named(self, peers: list[tuple[str, list[str]]]) -> None:
        """Downloaders a peer named (PEERS): providers, like those the DHT names."""
        for pid_text, addr_texts in peers:
            try:
                pid = ID.from_base58(pid_text)
                addrs = [Multiaddr(a) for a in addr_texts]
            except Exception:  # a malformed id or address: skip that entry
                continue
            self._offer_provider(PeerInfo(pid, addrs))

    # ------------------------------------------------------------ snapshot

    def snapshot(self, serving: Mapping[str, bool] | None = None) -> TransferInfo:
        """`serving`: peers downloading from us now -> whether we choke them (the manager's)."""
        now = time.monotonic()
        meta = self.meta
        total = meta.num_pieces if meta else 0
        have = self.picker.have_count() if self.picker else (total if self.state in ("complete", "seeding") else 0)
        rate = self.meter.rate(now)
        remaining = 0
        if meta is not None and self.picker is not None:
            remaining = max(0, meta.length - have * meta.piece_length)
        src = self.uploaded_source
        return TransferInfo(
            info_hash=self.hex,
            name=meta.name if meta else "",
            size=meta.length if meta else 0,
            have=have,
            total=total,
            bytes_per_s=rate,
            eta_s=eta_seconds(remaining, rate) if self.state == "downloading" else None,
            active_peers=sum(1 for p in self.peers.values() if p.state == "active"),
            state=self.state,
            direction="seed" if self.state == "seeding" else "download",
            path=self.path,
            uploaded=src.uploaded if src else 0,
            upload_bytes_per_s=src.meter.rate(now) if src else 0.0,
            error=self.error,
            peers=self._peer_rows(now, serving or {}),
            piece_sources=tuple(self.piece_sources),
        )

    def _peer_rows(self, now: float, serving: Mapping[str, bool]) -> tuple[TransferPeer, ...]:
        """Peers we fetch from (in `row` order: piece_sources names them by it), then
        peers that only download from us."""
        src = self.uploaded_source
        up = src.peers if src is not None else {}
        picker = self.picker
        rows = []
        for p in sorted(self.peers.values(), key=lambda p: p.row):
            key = str(p.peer_id)
            bits = picker.peer_bits.get(p.peer_id) if picker is not None else None
            asked = picker.peer_requests.get(p.peer_id, ()) if picker is not None else ()
            meter = up.get(key)
            rows.append(TransferPeer(key, p.meter.rate(now), meter.rate(now) if meter else 0.0,
                                     sum(bits) if bits is not None else 0,
                                     serving.get(key, False), key in serving,
                                     state=p.state, downloaded=p.meter.total, pieces=p.pieces,
                                     bad_pieces=p.bad_pieces, outstanding=len(asked), error=p.error))
        known = {str(pid) for pid in self.peers}
        for key in sorted(set(serving) | set(up)):
            if key not in known:
                meter = up.get(key)
                rows.append(TransferPeer(key, 0.0, meter.rate(now) if meter else 0.0, 0,
                                         serving.get(key, False), key in serving))
        return tuple(rows)

    # ------------------------------------------------------------ main loop

    def _notify(self) -> None:
        """Something changed (peers, pieces freed, completion): wake every waiter."""
        self._changed.set()
        self._changed = trio.Event()
        for peer in self.peers.values():
            peer.wake.set()

    async def run(self) -> None:
        """Drive the transfer to complete, error or cancelled (pauses loop inside)."""
        try:
            while not self._cancelled:
                if self._paused:
                    await self._unpaused.wait()
                    continue
                with trio.CancelScope() as scope:
                    self._scope = scope
                    try:
                        await self._run_active()
                    except BaseExceptionGroup as group:
                        raise first_error(group) from None
                    return
        except (TransferError, StorageError) as exc:
            self.state = "error"
            self.error = str(exc)
            self.node.bus.publish(ev.ErrorEvent(message=str(exc), where="torrent"))
        finally:
            self._scope = None
            if self.part is not None and self.picker is not None and self.state != "complete" \
                    and self.state != "seeding":
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(self.part.checkpoint, bytearray(self.picker.have),
                                                      self.part.logged)
                    except StorageError:
                        pass
            if self.part is not None:
                self.part.close()
            self.done.set()

    async def _run_active(self) -> None:
        self.state = "finding" if self.meta is None else "downloading"
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._discover)
            if self.meta is None:
                meta = await self._get_metainfo()
                self.meta = meta
                if await self._prepare(meta):
                    nursery.cancel_scope.cancel()
                    return
                for cb in self.on_ready:
                    cb(self)
                self.meta_ready.set()
                self.started = time.monotonic()
            self.state = "downloading"
            nursery.start_soon(self._checkpointer)
            nursery.start_soon(self._reporter)
            hashing = trio.CancelScope()
            nursery.start_soon(self._hash_in_order, hashing)
            await self._wait_complete()
            self.state = "verifying"
            assert self.part is not None
            hashing.cancel()
            self.sha256 = await self._final_check(self.part)
            nursery.cancel_scope.cancel()
        await self._finish()

    async def _prepare(self, meta: Metainfo) -> bool:
        """Open NAME.part (resuming). True when the final file is already there and whole."""
        final = self.download_dir / meta.name
        self.path = str(final)
        if final.exists() or final.is_symlink():
            if await trio.to_thread.run_sync(existing_matches, final, meta):
                self.sha256 = await trio.to_thread.run_sync(sha256_file, final)
                self._completed()
                return True
            raise TransferError(f"{final} already exists with other content; move it away first")
        self.part = PartFile(self.download_dir, meta)
        have = await trio.to_thread.run_sync(self.part.open)
        self.picker = PiecePicker(meta.num_pieces, have)
        self.piece_sources = [-2 if b else -1 for b in have]
        self.resumed = sum(have)
        self._whole, self._hashed_upto = WholeHasher(), 0
        self._last_checkpoint_have = self.picker.have_count()
        return False

    async def _final_check(self, part: PartFile) -> str:
        """Hash what the whole-file SHA-256 has not taken in yet beside the fsync (two
        threads). Pieces are not hashed again: each was verified when it arrived, or on
        resume (storage.PartFile.open). Returns the SHA-256."""
        async with trio.open_nursery() as inner:
            inner.start_soon(trio.to_thread.run_sync, part.sync)  # not behind the lock: at once
            async with self._hash_lock:  # _hash_in_order has stopped feeding the hasher
                await trio.to_thread.run_sync(part.hash_prefix, self._whole, part.meta.length)
        return self._whole.hexdigest()

    async def _hash_in_order(self, scope: trio.CancelScope) -> None:
        """Feed the whole-file SHA-256 the file's verified prefix as it grows (read back
        from the page cache in a thread), so little is left to hash once the last piece
        lands. At most HASH_STEP per thread call: cancelling waits for the call to end."""
        picker, part = self.picker, self.part
        assert picker is not None and part is not None
        with scope:
            while True:
                i = self._hashed_upto // part.meta.piece_length
                while i < picker.num_pieces and picker.have[i]:
                    i += 1
                upto = min(part.meta.length, i * part.meta.piece_length)
                whole = self._whole
                if upto > whole.offset:
                    async with self._hash_lock:
                        await trio.to_thread.run_sync(part.hash_prefix, whole, min(upto, whole.offset + HASH_STEP))
                    self._hashed_upto = whole.offset if whole is self._whole else 0
                else:
                    changed = self._changed
                    with trio.move_on_after(HASH_LOOK_EVERY):
                        await changed.wait()

    async def _finish(self) -> None:
        assert self.part is not None and self.meta is not None
        self.state = "verifying"
        await trio.to_thread.run_sync(self.part.finish)
        self.part.close()
        self.part = None
        self._completed()

    def _completed(self) -> None:
        meta = self.meta
        assert meta is not None
        self.state = "complete"
        self.node.bus.publish(tev.Progress(info_hash=self.hex, have=meta.num_pieces, total=meta.num_pieces,
                                           bytes_per_s=round(self.meter.rate(time.monotonic()), 1),
                                           peers=0))
        self.node.bus.publish(tev.Complete(
            info_hash=self.hex, path=self.path, sha256=self.sha256, resumed=self.resumed,
            downloaded=sum(p.meter.total for p in self.peers.values()),
            transfer_s=round(time.monotonic() - self.started, 3) if self.started else 0.0,
            from_peers={str(p.peer_id): p.pieces for p in self.peers.values() if p.pieces}))
        for cb in self.on_complete:
            cb(self)

    async def _wait_complete(self) -> None:
        picker = self.picker
        assert picker is not None
        alone_since: float | None = None
        # --timeout holds whatever the providers do: connected peers that send nothing (a
        # stalled or SIGSTOPped server, one that stops mid-piece) end the download too.
        last_have, progress_at = picker.have_count(), trio.current_time()
        while not picker.complete:
            changed = self._changed
            with trio.move_on_after(min(1.0, self.timeout / 4)):
                await changed.wait()
            active = any(p.state == "active" for p in self.peers.values()) or bool(self.sessions)
            now = trio.current_time()
            if picker.have_count() != last_have:
                last_have, progress_at = picker.have_count(), now
            elif now - progress_at > self.timeout:
                reasons = "; ".join(sorted({p.error for p in self.peers.values() if p.error}))[:300]
                raise TransferError(
                    f"no piece of {self.hex[:16]}… received for {self.timeout:g}s "
                    f"({picker.have_count()}/{picker.num_pieces} pieces kept)"
                    + (f": {reasons}" if reasons else ": the providers stopped sending"))
            if active:
                alone_since = None
            elif alone_since is None:
                alone_since = now
            elif now - alone_since > self.timeout:
                reasons = "; ".join(sorted({p.error for p in self.peers.values() if p.error}))[:300]
                raise TransferError(
                    f"no provider of {self.hex[:16]}… reachable for {self.timeout:g}s "
                    f"({picker.have_count()}/{picker.num_pieces} pieces kept)"
                    + (f": {reasons}" if reasons else ""))

    async def _checkpointer(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_EVERY)
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        if self.part is None or self.picker is None:
            return
        count = self.picker.have_count()
        if count == self._last_checkpoint_have:
            return
        snapshot, logged = bytearray(self.picker.have), self.part.logged  # together, on the loop that logs
        await trio.to_thread.run_sync(self.part.checkpoint, snapshot, logged)
        self._last_checkpoint_have = count

    async def _reporter(self) -> None:
        while True:
            if self.picker is not None:
                now = time.monotonic()
                down = {str(p.peer_id): round(p.meter.rate(now), 1) for p in self.peers.values()}
                src = self.uploaded_source
                up = {pid: round(m.rate(now), 1) for pid, m in src.peers.items()} if src is not None else {}
                self.node.bus.publish(tev.Progress(
                    info_hash=self.hex, have=self.picker.have_count(), total=self.picker.num_pieces,
                    bytes_per_s=round(self.meter.rate(now), 1),
                    peers=sum(1 for p in self.peers.values() if p.state == "active"),
                    down_by_peer={k: v for k, v in down.items() if v > 0},
                    up_by_peer={k: v for k, v in up.items() if v > 0}))
            await trio.sleep(PROGRESS_EVERY)

    # ------------------------------------------------------------ providers

    async def _discover(self) -> None:
        """Keep walking the DHT for providers. Each new one gets a peer task the moment a
        walk names it, not when the walk ends: a silent peer among the closest holds a
        walk for its query deadline, and the download need not wait for it."""
        await self.node.bootstrapped.wait()
        key = dht_key(digest_multihash(self.info_hash))
        wait = DISCOVERY_MIN
        while True:
            before = self._peer_tasks_started
            try:
                await self.node.find_providers(key, timeout=max(self.node.config.dial_timeout, 5.0),
                                               on_provider=self._offer_provider)
            except Exception:  # a failed walk is retried after the back-off
                pass
            # Provider records spread through the DHT over time: look again soon after
            # finding someone new, then back off.
            fresh = self._peer_tasks_started > before
            wait = DISCOVERY_MIN if fresh else min(wait * 2, DISCOVERY_MAX)
            await trio.sleep(wait)

    def _offer_provider(self, info: PeerInfo) -> None:
        """Start a peer task for a provider, unless it is us, banned, already in a session,
        or its last one ended less than `retry_after(its failed dials in a row)` ago."""
        pid = info.peer_id
        if pid == self.node.peer_id or pid in self.banned or pid in self.sessions:
            return
        known = self.peers.get(pid)
        if known is not None and trio.current_time() - known.ended_at < retry_after(known.dial_failures):
            return
        self.sessions.add(pid)
        self._peer_tasks_started += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._peer_task, info)

    def _peer(self, pid: ID) -> _Peer:
        peer = self.peers.get(pid)
        if peer is None:
            peer = self.peers[pid] = _Peer(pid, len(self.peers))
        return peer

    async def _peer_task(self, info: PeerInfo) -> None:
        pid = info.peer_id
        peer = self._peer(pid)
        peer.state, peer.error = "connecting", ""
        try:
            try:
                if not self.node.host.get_network().get_connections(pid):
                    # py-libp2p refuses any dial to a peer for 60 s after one failed, even to
                    # the addresses the DHT just gave us; RETRY_PEER_AFTER paces ours.
                    forget_dial_failure(self.node.host, pid)
                    await self.node.connect_peer(info)
            except Exception as exc:
                peer.dial_failures += 1
                raise PeerError(str(exc)) from None
            peer.dial_failures = 0
            self.providers[pid] = info
            self._notify()
            early = None
            if not self.meta_ready.is_set():
                early = await self._open_early(peer)
            try:
                await self.meta_ready.wait()
            except BaseException:
                if early is not None:
                    with trio.CancelScope(shield=True):
                        await reset_quietly(early)
                raise
            with trio.CancelScope() as peer.scope:
                await self._session_once_served(peer, early)
            if peer.state != "bad":
                peer.state = "closed"
        except BadPeer as exc:
            self._mark_bad(peer, str(exc))
        except (PeerError, wire.ProtocolError, trio.TooSlowError) as exc:
            peer.state, peer.error = "closed", str(exc) or "timed out"
        except (StorageError, TransferError):
            raise
        except Exception as exc:  # py-libp2p stream errors (reset, closed connection)
            peer.state, peer.error = "closed", f"{type(exc).__name__}: {exc}"
        finally:
            self.providers.pop(pid, None)
            self.sessions.discard(pid)
            peer.ended_at = trio.current_time()
            if self.picker is not None:
                self.picker.remove_peer(pid)
            self._notify()

    def _mark_bad(self, peer: _Peer, reason: str) -> None:
        """Stop using a peer that sent bad data, for the rest of this transfer."""
        if peer.state == "bad":
            return
        peer.state, peer.error = "bad", reason
        self.banned.add(peer.peer_id)
        if peer.scope is not None:
            peer.scope.cancel()
        if self.reputation is not None:
            self.reputation.record_bad_data(peer.peer_id)
        self.node.bus.publish(tev.PeerMarked(info_hash=self.hex, peer_id=str(peer.peer_id), reason=reason))

    async def _get_metainfo(self) -> Metainfo:
        """From any provider; a provider with wrong or unsafe metainfo is marked bad."""
        deadline = trio.current_time() + self.timeout
        tried: set[ID] = set()
        retry_at: dict[ID, float] = {}  # a provider that failed for a passing reason is asked again
        last_error = ""
        while True:
            now = trio.current_time()
            for pid in [p for p in self.providers
                        if p not in self.banned and retry_at.get(p, now) <= now]:
                tried.add(pid)
                try:  # bounded by what is left of --timeout too: a stalling provider cannot hold it
                    meta = await fetch_metainfo(self.node.host, pid, self.info_hash,
                                                max(0.1, min(self.node.config.dial_timeout, deadline - now)))
                except PeerError as exc:
                    last_error = str(exc)
                    retry_at[pid] = trio.current_time() + METAINFO_RETRY
                    if isinstance(exc, BadMetainfo):  # banned: not asked again
                        self.banned.add(pid)
                        self._peer(pid).state = "bad"
                        self._peer(pid).error = str(exc)
                        self.node.bus.publish(tev.PeerMarked(info_hash=self.hex, peer_id=str(pid), reason=str(exc)))
                    continue
                return meta
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                detail = f": {last_error}" if last_error else ""
                if not tried:
                    reasons = "; ".join(sorted({p.error for p in self.peers.values() if p.error}))[:300]
                    if reasons:  # the DHT named providers, but none could be reached
                        raise TransferError(f"no provider of {self.hex} reachable within {self.timeout:g}s: {reasons}")
                    raise TransferError(f"no provider of {self.hex} found within {self.timeout:g}s")
                raise TransferError(f"no provider gave valid metainfo for {self.hex}{detail}")
            changed = self._changed
            with trio.move_on_after(min(remaining, 1.0)):
                await changed.wait()

    # ------------------------------------------------------------ one peer

    async def _open_early(self, peer: _Peer) -> INetStream | None:
        """While the metainfo is being fetched (on its own stream, by _get_metainfo), open
        the piece stream and say INTERESTED, so the provider's BITFIELD is waiting when the
        metainfo arrives: the stream's round trips leave the path to the first piece. The
        first such stream also asks for piece 0 (every non-empty file has one), so that piece
        comes back with the metainfo, a round trip after the handshake. None if that fails
        (the session opens its own)."""
        stream = None
        hello = wire.encode_interested(self.info_hash)
        if not self._asked_early:
            self._asked_early = True
            peer.early_asks = (0,)
            hello += wire.encode_index(wire.REQUEST, 0)
        peer.early_at = time.monotonic()
        try:
            with trio.fail_after(self.node.config.dial_timeout):
                stream = await open_stream(self.node.host, peer.peer_id, self.node.config.dial_timeout,
                                           first=hello, prepare=self._grow)
            return stream
        except Exception:
            peer.early_asks = ()
            if stream is not None:
                await reset_quietly(stream)
            return None

    @staticmethod
    async def _grow(stream: INetStream) -> None:
        await grow_receive_window(stream, RECEIVE_WINDOW)

    async def _session_once_served(self, peer: _Peer, early: INetStream | None) -> None:
        """`_session`, asked again every NOT_SERVING_RETRY for up to NOT_SERVING_FOR while
        the peer does not serve the torrent yet (a fellow downloader named to us before it
        had the metainfo)."""
        give_up = trio.current_time() + NOT_SERVING_FOR
        while True:
            try:
                await self._session(peer, early)
                return
            except NotServing:
                if trio.current_time() + NOT_SERVING_RETRY > give_up:
                    raise
            early = None
            peer.state = "connecting"
            await trio.sleep(NOT_SERVING_RETRY)

    async def _session(self, peer: _Peer, early: INetStream | None = None) -> None:
        """`early`: a piece stream opened (INTERESTED sent) before the metainfo arrived."""
        picker = self.picker
        assert picker is not None
        pid = peer.peer_id
        session = DownloadSession(pid, self.info_hash, picker, peer)
        hello = session.start()
        if early is not None and peer.early_asks:
            session.asked_early(peer.early_asks, peer.early_at)
            peer.early_asks = ()
        stream = early or await open_stream(self.node.host, pid, self.node.config.dial_timeout, first=hello,
                                            prepare=self._grow)
        try:
            release_in_halves(stream)  # one WINDOW_UPDATE per 8 MiB read, not one per read
            hand_over_buffer(stream)  # each read is yamux's buffer itself, not a copy
            with trio.fail_after(self.node.config.dial_timeout):
                if early is not None and hello != (said := wire.encode_interested(self.info_hash)):
                    await stream.write(hello.removeprefix(said))  # what start() says beyond INTERESTED
                while not session.ready:
                    data = await _read(stream, READ_COALESCE)
                    now = time.monotonic()
                    self._apply(peer, session, session.receive_data(data, now), now)
            peer.session = session
            peer.state = "active"
            self._notify()
            self._readers += 1
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._requester, peer, session, stream)
                    await self._reader(peer, session, stream)
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise first_error(group) from None
            finally:
                self._readers -= 1
        finally:
            peer.session = None
            await reset_quietly(stream)

    async def _requester(self, peer: _Peer, session: DownloadSession, stream: INetStream) -> None:
        picker = self.picker
        assert picker is not None
        while not picker.complete:
            now = time.monotonic()
            stalled = session.check_stall(now)
            if stalled:
                self._apply(peer, session, stalled, now)
            out = session.fill(now)
            if out:
                with trio.fail_after(PEER_STALL):
                    await stream.write(out)
                continue
            peer.wake = wake = trio.Event()  # no await since the check above: no lost wake-up
            with trio.move_on_after(1.0):
                await wake.wait()

    async def _reader(self, peer: _Peer, session: DownloadSession, stream: INetStream) -> None:
        picker = self.picker
        assert picker is not None
        while not picker.complete:
            limit = PEER_STALL if session.outstanding else math.inf
            with trio.fail_after(limit):
                data = await _read(stream, READ_COALESCE if self._readers == 1 else 0.0)
            now = time.monotonic()
            self._apply(peer, session, session.receive_data(data, now), now)

    def _apply(self, peer: _Peer, session: DownloadSession, actions: list[Action], now: float) -> None:
        """Carry out what a session asked for after one read; wake-ups once per read.

        Pieces are verified (SHA-256, ~45 µs a piece) and written on the event loop, by the
        reader that received them, not in a thread: measured on 256 MiB, handing batches to
        a thread made this work take three times as long, the thread waiting for the GIL
        after each hash and write while the loop decrypted the next frames. A write lands
        in the page cache; the checkpointer fsyncs in a thread."""
        meta, part = self.meta, self.part
        assert meta is not None and part is not None
        todo: deque[Action] = deque(actions)
        stored = 0
        changed = wake = False
        while todo:
            act = todo.popleft()
            if isinstance(act, Verify):
                todo.extend(session.piece_verified(act.index, meta.verify_piece(act.index, act.data)))
            elif isinstance(act, Store):
                part.write_piece(act.index, act.data)
                self.piece_sources[act.index] = peer.row
                stored += len(act.data)
                for cb in self.on_piece:
                    cb(act.index)
                todo.extend(session.piece_stored(act.index))
            elif isinstance(act, Cancel):
                other = self.peers.get(act.peer)  # type: ignore[call-overload]
                if other is not None and other.session is not None:
                    other.session.cancel(act.index)
                    other.wake.set()
            elif isinstance(act, Peers):
                self._offer_named(act.peers)
            elif isinstance(act, Changed):
                changed = True
            elif isinstance(act, Wake):
                wake = True
            elif isinstance(act, PeerBad):
                self._mark_bad(peer, act.reason)
            elif isinstance(act, Close):
                raise (NotServing if act.reason == wire.UNKNOWN_TORRENT else PeerError)(act.reason)
        if stored:
            self.meter.add(stored, now)
        if wake:
            peer.wake.set()  # its requester has room for another round of requests
        if changed:
            self._notify()


async def _read(stream: INetStream, coalesce: float) -> bytes:
    """One read (b"" at EOF). After a small one, sleep `coalesce` so frames pile up: one
    read (and yamux window update) for many."""
    try:
        data = await stream.read(READ_SIZE)
    except StreamEOF:
        return b""
    if coalesce and len(data) < COALESCE_BELOW:
        await trio.sleep(coalesce)
    return data
