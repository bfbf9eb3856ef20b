"""One stream of `/punch/torrent/1.0.0` as a sans-IO state machine, in the style of h11.

`DownloadSession` is the client end (we fetch pieces), `ServeSession` the server end.
Feed them the bytes that arrived (`receive_data`) and the outcome of the work they asked
for (`piece_verified`, `piece_stored`, `pieces_read`); they answer with actions (`Send`,
`Verify`, `Store`, `Read`, `Cancel`, `PeerBad`, `Close`, ...) and bytes to write. No I/O,
no clock (callers pass `now`), no trio or libp2p: transfer.py and service.py carry the
actions out. Work is batched per read (every frame that arrived together), not per byte.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from punch_net.torrent import PIECE_LENGTH, wire
from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.picker import Peer, PiecePicker
from punch_net.torrent.rates import RateMeter
from punch_net.torrent.spreader import Spreader

DEPTH = 96  # most pieces outstanding per peer (6 MiB): the pipe never drains between requests
MIN_DEPTH = 4
START_DEPTH = 16  # before the peer's rate is known
HORIZON = 2.0  # seconds of the peer's measured rate kept in flight (at least twice its delay)
STALL_AFTER = 5.0  # a peer with requests out that sends no piece this long: they go to others
REFILL = 16  # top up requests in batches of this many (fewer, larger writes)
MAX_QUEUED = 1024  # requests one stream may have outstanding at a server; more is a protocol error
BATCH_BYTES = 1 << 20  # pieces a server reads and writes at once (~1 MiB per write)

CatalogueEntry = dict[str, str | int | bool]


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the stream."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Verify:
    """Check this piece against the metainfo, then call `piece_verified(index, ok)`."""

    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Store:
    """Write this verified piece, then call `piece_stored(index)`."""

    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Read:
    """Read these pieces of the session's source, then call `pieces_read(indexes, data)`."""

    indexes: list[int]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Another peer's session should cancel its request for `index` (`DownloadSession.cancel`)."""

    peer: Peer
    index: int


@dataclass(frozen=True, slots=True)
class Peers:
    """The server named other downloaders of the torrent: offer them as providers."""

    peers: list[tuple[str, list[str]]]  # (peer id, multiaddrs)


@dataclass(frozen=True, slots=True)
class Changed:
    """The shared picker changed (pieces freed, peers' pieces, endgame, completion): wake waiters."""


@dataclass(frozen=True, slots=True)
class Wake:
    """This session has room for another round of requests: call `fill()` soon."""


@dataclass(frozen=True, slots=True)
class PeerBad:
    """The peer sent data that failed verification: stop using it for this transfer."""

    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    """The exchange is over; `reason` empty: cleanly (a server answered all it was asked),
    otherwise a protocol error or the peer gave up, and the stream should be reset."""

    reason: str = ""


Action = Send | Verify | Store | Read | Cancel | Peers | Changed | Wake | PeerBad | Close
_CHANGED = Changed()
_WAKE = Wake()


# ---------------------------------------------------------------- downloading


@dataclass(kw_only=True)
class PeerCounters:
    """What one peer gave us, across all its sessions (the downloader's peer record is one)."""

    meter: RateMeter = field(default_factory=RateMeter)  # PIECE payload bytes received, verified or not
    pieces: int = 0  # verified and stored
    bad_pieces: int = 0  # failed verification


class DownloadSession:
    """The client end of one stream: INTERESTED, the peer's bitfield, then pipelined
    REQUESTs chosen by the transfer-wide `picker`, at most `depth` outstanding.

    Every Verify must be answered with `piece_verified` and every Store with `piece_stored`
    (the trio adapter does both before its next read); a piece is counted as ours only once
    stored, so a resume record never claims a piece that is not on disk."""

    def __init__(self, peer: Peer, info_hash: bytes, picker: PiecePicker, counters: PeerCounters,
                 depth: int = DEPTH, refill: int = REFILL) -> None:
        self.peer = peer
        self.info_hash = info_hash
        self.picker = picker
        self.counters = counters
        self.depth = depth
        self.refill = refill
        self.ready = False  # the peer's bitfield arrived; requests may go out
        self.closed = False
        self.choked = False  # the peer sent CHOKE: no requests until UNCHOKE
        self.snubbed = False  # stalled: one request at a time until a piece arrives
        self.max_depth = depth
        self.min_delay = math.inf  # shortest REQUEST -> PIECE time seen (s)
        self._sent_at: dict[int, float] = {}
        self._last_progress = 0.0  # last piece, or when requests went out to an idle peer
        self._decoder = wire.Decoder(wire.SERVER_TYPES)
        # Replies still allowed per piece: a count, not a set, since a piece asked for,
        # cancelled and asked for again may be answered twice.
        self._asked: dict[int, int] = {}
        self._verifying: dict[int, bytes] = {}  # Verify handed out, outcome not yet reported
        self._cancels: list[int] = []
        self._early: tuple[int, ...] = ()  # asked before this session (asked_early)

    def asked_early(self, indexes: tuple[int, ...], sent_at: float) -> None:
        """REQUESTs that went out with INTERESTED, before the metainfo: their PIECE or REJECT
        is expected like any other's; in the picker's count from the peer's bitfield on."""
        self._early = tuple(i for i in indexes if 0 <= i < self.picker.num_pieces)
        if self._early:  # requests went out to an idle peer then: the stall clock starts there
            self._last_progress = sent_at
        for index in self._early:
            self._asked[index] = self._asked.get(index, 0) + 1
            self._sent_at[index] = sent_at

    @property
    def outstanding(self) -> int:
        """Requests the picker has in flight to this peer (cancelled ones excluded)."""
        return len(self.picker.peer_requests.get(self.peer, ()))

    def start(self) -> bytes:
        return wire.encode_interested(self.info_hash)

    def target_depth(self, now: float) -> int:
        """Requests to keep in flight: the peer's bandwidth x delay (HORIZON at least), so a
        slow peer holds few pieces and never the file's tail; one while it is snubbed."""
        if self.snubbed:
            return 1
        rate = self.counters.meter.rate(now)
        if rate <= 0:
            return min(START_DEPTH, self.max_depth)
        delay = max(HORIZON, 2 * self.min_delay) if self.min_delay < math.inf else HORIZON
        return max(MIN_DEPTH, min(self.max_depth, math.ceil(rate * delay / PIECE_LENGTH) + 2))

    def fill(self, now: float = 0.0) -> bytes:
        """CANCELs owed and new REQUESTs, as one write (b"": nothing to send now)."""
        if not self.ready or self.closed:
            return b""
        out: list[bytes] = []
        if self._cancels:
            out += [wire.encode_index(wire.CANCEL, i) for i in self._cancels]
            self._cancels.clear()
        if self.choked:
            return b"".join(out)
        outstanding = self.outstanding
        if now:
            self.depth = self.target_depth(now)
            self.refill = max(1, min(REFILL, self.depth // 4))
            if not outstanding:
                self._last_progress = now
        room = self.depth - outstanding
        # Refill in rounds of `refill`, unless the pipe is nearly empty (the file's tail).
        if room >= self.refill or (outstanding < self.refill and room > 0):
            asked = self._asked
            sent_at = self._sent_at
            for index in self.picker.pick(self.peer, room):
                asked[index] = asked.get(index, 0) + 1
                sent_at[index] = now
                out.append(wire.encode_index(wire.REQUEST, index))
        return b"".join(out)

    def check_stall(self, now: float) -> list[Action]:
        """Called about once a second: a peer that sent no piece for STALL_AFTER while we
        wait on it is snubbed, and its requests are freed for the other peers (CANCELs go
        out with the next `fill`; a piece still on its way is accepted)."""
        mine = self.picker.peer_requests.get(self.peer)
        if self.closed or not mine or now - self._last_progress < STALL_AFTER:
            return []
        self.snubbed = True
        self.picker.set_choking(self.peer, True)  # its pieces are not to be counted on
        for index in sorted(mine):
            self.picker.failed(self.peer, index)
            self._cancels.append(index)
        self._last_progress = now
        return [_CHANGED, _WAKE]

    def cancel(self, index: int) -> None:
        """Another peer delivered `index`: tell this one not to bother (sent by `fill`)."""
        if not self.closed:
            self._cancels.append(index)

    def receive_data(self, data: bytes, now: float) -> list[Action]:
        """Bytes from the stream (b"" at EOF) -> actions, Close alone on any error."""
        if self.closed:
            return []
        if not data:
            return self._close("peer closed the stream")
        try:
            messages = self._decoder.feed(data)
        except wire.ProtocolError as exc:
            return self._close(str(exc))
        picker, peer, asked, verifying = self.picker, self.peer, self._asked, self._verifying
        have, count = picker.have, picker.num_pieces
        out: list[Action] = []
        received = 0
        changed = have_news = False
        for msg in messages:
            t = msg.type
            index = msg.index
            if t == wire.PIECE:  # the hot path first
                if not 0 <= index < count:
                    return self._close(f"piece index {index} out of range")
                left = asked.get(index, 0)
                if not left:
                    return self._close(f"piece {index} was not requested")
                if left == 1:
                    del asked[index]
                else:
                    asked[index] = left - 1
                received += len(msg.data)
                self._last_progress = now
                if self.snubbed:
                    self.snubbed = False
                    picker.set_choking(peer, self.choked)
                sent = self._sent_at.pop(index, None)
                if sent:
                    self.min_delay = min(self.min_delay, now - sent)
                if have[index] or index in verifying:  # a duplicate from endgame, or after a cancel
                    picker.failed(peer, index)
                    changed = True
                    continue
                verifying[index] = msg.data
                out.append(Verify(index, msg.data))
            elif not self.ready:
                if t == wire.ERROR:
                    return self._close(msg.data.decode(errors="replace"))
                if t != wire.BITFIELD or msg.info_hash != self.info_hash:
                    return self._close("expected a bitfield")
                try:
                    bits = wire.unpack_bits(msg.data, count)
                except wire.ProtocolError as exc:
                    return self._close(str(exc))
                picker.add_peer(peer, bits)
                for early in self._early:  # still on its way
                    if asked.get(early) and early not in verifying:
                        picker.claim(peer, early)
                self.ready = changed = True
            elif t == wire.REJECT:
                left = asked.get(index, 0)
                if not left:
                    return self._close(f"reject of piece {index}, which was not requested")
                if left == 1:
                    del asked[index]
                else:
                    asked[index] = left - 1
                picker.failed(peer, index)
                picker.peer_lacks(peer, index)
                changed = True
            elif t == wire.CHOKE:
                # The server dropped our queued requests: free them for other peers.
                self.choked = True
                picker.set_choking(peer, True)
                for i in sorted(picker.peer_requests.get(peer, ())):
                    picker.failed(peer, i)
                changed = True
            elif t == wire.UNCHOKE:
                self.choked = False
                picker.set_choking(peer, self.snubbed)
                self._last_progress = now
                changed = True
            elif t == wire.PEERS:
                try:
                    found = wire.decode_peers(msg.data)
                except wire.ProtocolError as exc:
                    return self._close(str(exc))
                if found:
                    out.append(Peers(found))
            elif t == wire.HAVE:
                if not 0 <= index < count:
                    return self._close(f"have index {index} out of range")
                picker.peer_has(peer, index)
                # Asked of a seed only? This peer can give it now: cancel the seed's copy,
                # so the seed's upload goes to pieces no one else has.
                out += [Cancel(seed, index) for seed in picker.release_from_seeds(peer, index)]
                # Only this peer's requester can use a HAVE: waking every requester per read
                # (Changed) cost a pick per peer per HAVE-bearing read in a 1 + 8 swarm.
                # A peer that just became a seed changes what the others may ask of seeds.
                have_news = True
                if picker.counts.get(peer) == count:
                    changed = True
            elif t == wire.ERROR:
                return self._close(msg.data.decode(errors="replace"))
            else:
                return self._close(f"unexpected message 0x{t:02x}")
        if received:
            self.counters.meter.add(received, now)
        if changed or picker.complete or picker.endgame:
            out.append(_CHANGED)
        elif have_news and self._room():
            out.append(_WAKE)
        return out

    def _room(self) -> bool:
        """`fill` would request now (the same test)."""
        outstanding = self.outstanding
        room = self.depth - outstanding
        return room >= self.refill or (outstanding < self.refill and room > 0)

    def piece_verified(self, index: int, ok: bool) -> list[Action]:
        """The outcome of a Verify: a Store, a PeerBad, or nothing (another copy landed first)."""
        data = self._verifying.pop(index)
        picker = self.picker
        if picker.have[index]:
            picker.failed(self.peer, index)
            return []
        if not ok:
            picker.failed(self.peer, index)
            self.counters.bad_pieces += 1
            self.closed = True
            return [PeerBad(f"piece {index} failed its SHA-256 check")]
        return [Store(index, data)]

    def piece_stored(self, index: int) -> list[Action]:
        """A verified piece is on disk: the picker counts it, other peers asked cancel it."""
        picker = self.picker
        out: list[Action] = [Cancel(other, index) for other in picker.received(self.peer, index)]
        self.counters.pieces += 1
        if picker.complete or picker.endgame:
            out.append(_CHANGED)
        if self.depth - self.outstanding >= self.refill:
            out.append(_WAKE)
        return out

    def _close(self, reason: str) -> list[Action]:
        self.closed = True
        return [Close(reason)]


# ---------------------------------------------------------------- serving


class Servable(Protocol):
    """A torrent a server can answer for (the service's Source)."""

    meta: Metainfo
    sent: list[int]  # per piece: copies uploaded or being uploaded (counted when read)
    queued: list[int]  # per piece: streams that have it queued now (REQUESTs not yet read)
    spreader: Spreader | None  # a seed that spreads its pieces across a swarm (spreader.py)

    def has(self, index: int) -> bool: ...

    def bitfield(self) -> bytes: ...


S = TypeVar("S", bound=Servable)
S_co = TypeVar("S_co", bound=Servable, covariant=True)


class Library(Protocol[S_co]):
    """What a server shares (the TorrentService)."""

    @property
    def sources(self) -> Mapping[bytes, S_co]: ...

    @property
    def paused(self) -> AbstractSet[bytes]: ...

    def catalogue(self) -> list[CatalogueEntry]: ...


class ServeSession(Generic[S]):
    """The server end of one stream: LIST, GET_META, or INTERESTED then REQUESTs, queued
    (at most MAX_QUEUED) and handed out in batches of ~BATCH_BYTES by `next_read`."""

    def __init__(self, library: Library[S], peer: str = "") -> None:
        self.library = library
        self.peer = peer  # who is downloading (the choker ranks streams by it)
        self.source: S | None = None  # set by INTERESTED; one stream serves one torrent
        self.closed = False
        self.choked = False  # while choked, REQUESTs are dropped (the client freed them on CHOKE)
        self._decoder = wire.Decoder(wire.CLIENT_TYPES)
        self._queue: deque[int] = deque()
        self._queued: set[int] = set()
        self._eof = False
        self._control: list[bytes] = []  # HAVE, CHOKE, UNCHOKE, PEERS frames owed to the peer

    def have(self, index: int) -> None:
        """We verified `index` while this peer downloads from us: tell it (`take_control`)."""
        if self.source is not None and not self.closed:
            self._control.append(wire.encode_index(wire.HAVE, index))

    def tell_peers(self, peers: list[tuple[str, list[str]]]) -> None:
        """Name other downloaders of this torrent to the peer (peer exchange)."""
        if peers and self.source is not None and not self.closed:
            self._control.append(wire.encode_peers(peers))

    def set_choked(self, choked: bool) -> bool:
        """Choke or unchoke the peer; True if that changed anything (a frame is owed).
        Choking drops the queued requests: the client frees them when the CHOKE arrives."""
        if choked == self.choked or self.closed:
            return False
        self.choked = choked
        if choked:
            self._drop_queue()
        if self.source is not None and self.source.spreader is not None:
            self.source.spreader.choke(self, choked)
        self._control.append(wire.frame(wire.CHOKE if choked else wire.UNCHOKE))
        return True

    def _drop_queue(self) -> None:
        if self.source is not None:
            queued = self.source.queued
            for index in self._queue:
                queued[index] -= 1
            if self.source.spreader is not None:
                self.source.spreader.release(self, list(self._queue))
        self._queue.clear()
        self._queued.clear()

    def release(self) -> None:
        """The stream ended: its queued requests no longer count as promised copies."""
        self._drop_queue()
        if self.source is not None and self.source.spreader is not None:
            self.source.spreader.leave(self)

    @property
    def pending_control(self) -> bool:
        spreader = self.source.spreader if self.source is not None else None
        return bool(self._control) or (spreader is not None and spreader.owes(self))

    def take_control(self) -> bytes:
        """The HAVE/CHOKE/UNCHOKE/PEERS frames owed, as one write (b"": none)."""
        spreader = self.source.spreader if self.source is not None else None
        if spreader is not None and not self.closed:
            self._control += [wire.encode_index(wire.HAVE, i) for i in spreader.take(self)]
        if not self._control:
            return b""
        out = b"".join(self._control)
        self._control.clear()
        return out

    @property
    def queued(self) -> int:
        return len(self._queue)

    def receive_data(self, data: bytes) -> list[Action]:
        """Bytes from the stream (b"" at EOF) -> one Send of all the answers, or Close on a
        protocol error. Queued requests are collected with `next_read`."""
        if self.closed:
            return []
        if not data:
            self._eof = True
            return []
        replies: list[bytes] = []
        try:
            for msg in self._decoder.feed(data):
                reply = self._handle(msg)
                if reply:
                    replies.append(reply)
        except wire.ProtocolError as exc:
            self.closed = True
            return [Close(str(exc))]
        return [Send(b"".join(replies))] if replies else []

    def next_read(self) -> Read | Close | None:
        """The next batch of pieces to read; Close once the client has finished and every
        request is answered; None while there is nothing to do (wait for receive_data)."""
        if self._queue:
            src = self.source
            assert src is not None  # REQUESTs are queued only after INTERESTED
            queue, queued = self._queue, self._queued
            batch: list[int] = []
            size = 0
            sent, promised = src.sent, src.queued
            if len(queue) > 1 and any(sent[i] or promised[i] > 1 for i in queue):
                # Pieces sent (counted once read: a batch takes ~0.4 s to leave at a share
                # of a 10 MB/s uplink) or queued for other downloaders fewest times first:
                # a seeder spreads distinct pieces across its downloaders, so they have
                # something to trade, and a copy another downloader will soon offer waits
                # for its CANCEL (measured: a seed of a 1 + 4 swarm sent ~20% of its upload
                # as copies the downloaders cancelled too late).
                order = sorted(queue, key=lambda i: sent[i] + promised[i])
                for index in order:
                    if size >= BATCH_BYTES:
                        break
                    batch.append(index)
                    size += src.meta.piece_size(index)
                for index in batch:
                    queue.remove(index)
                    queued.discard(index)
                    promised[index] -= 1
                    sent[index] += 1
            else:
                while queue and size < BATCH_BYTES:
                    index = queue.popleft()
                    queued.discard(index)
                    promised[index] -= 1
                    sent[index] += 1
                    batch.append(index)
                    size += src.meta.piece_size(index)
            if src.spreader is not None:
                for index in batch:
                    src.spreader.read(index)
            return Read(batch)
        if self._eof or self.closed:
            return Close()
        return None

    def pieces_read(self, indexes: list[int], pieces: list[bytes] | None) -> bytes:
        """The frames answering a Read; `pieces` None: the read failed, so REJECT them
        (the client asks someone else) rather than leave the client waiting."""
        if pieces is None:
            return b"".join(wire.encode_index(wire.REJECT, i) for i in indexes)
        if self.source is not None and self.source.spreader is not None:
            self.source.spreader.served(self)  # the previous write went out: it takes pieces
        parts: list[bytes] = []
        for index, data in zip(indexes, pieces, strict=True):
            parts.append(wire.encode_piece_header(index, len(data)))
            parts.append(data)
        return b"".join(parts)

    def _handle(self, msg: wire.Message) -> bytes:
        t = msg.type
        if t == wire.REQUEST:
            src = self.source
            if src is None:
                raise wire.ProtocolError("REQUEST before INTERESTED")
            index = msg.index
            if self.choked:
                return b""
            # REJECTs are written by the writer (take_control), as pieces are: two tasks
            # writing one stream interleave their yamux frames (the client then reads garbage).
            if src.meta.info_hash in self.library.paused or not src.has(index):
                self._control.append(wire.encode_index(wire.REJECT, index))
                return b""
            if index in self._queued:
                return b""
            if src.spreader is not None and not src.spreader.request(self, index):
                self._control.append(wire.encode_index(wire.REJECT, index))  # another downloader gets it: ask it
                return b""
            if len(self._queue) >= MAX_QUEUED:
                raise wire.ProtocolError(f"more than {MAX_QUEUED} requests outstanding")
            self._queue.append(index)
            self._queued.add(index)
            src.queued[index] += 1
            return b""
        if t == wire.CANCEL:
            if msg.index in self._queued:
                self._queued.discard(msg.index)
                self._queue.remove(msg.index)
                assert self.source is not None  # queued only after INTERESTED
                self.source.queued[msg.index] -= 1
                if self.source.spreader is not None:
                    self.source.spreader.release(self, [msg.index])
            return b""
        if t == wire.LIST:
            return wire.encode_catalogue(self.library.catalogue())
        # GET_META or INTERESTED: the decoder admits client types only
        found = self.library.sources.get(msg.info_hash)
        if found is None or msg.info_hash in self.library.paused:
            return wire.encode_error(wire.UNKNOWN_TORRENT)
        if t == wire.GET_META:
            return wire.encode_meta(msg.info_hash, found.meta.encode())
        if self.source is not None and self.source is not found:
            raise wire.ProtocolError("one stream serves one torrent")
        self.source = found
        if found.spreader is not None:
            return wire.encode_bitfield(msg.info_hash, wire.pack_bits(found.spreader.join(self), found.meta.num_pieces))
        return wire.encode_bitfield(msg.info_hash, found.bitfield())
