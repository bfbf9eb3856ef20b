"""The torrent peer-session cores, a downloader fed by a server in memory: no sockets, no trio."""

from __future__ import annotations

import ast
import hashlib
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from punch_net.torrent import PIECE_LENGTH, wire
from punch_net.torrent import peer_session as ps
from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.peer_session import (
    Action,
    Cancel,
    Close,
    DownloadSession,
    PeerBad,
    PeerCounters,
    Read,
    Send,
    ServeSession,
    Store,
    Verify,
    Wake,
)
from punch_net.torrent.picker import PiecePicker
from punch_net.torrent.spreader import Spreader

PIECE = 1024  # small pieces keep the tests fast; the protocol does not care


def meta_for(data: bytes, name: str = "f.bin") -> Metainfo:
    pieces = tuple(hashlib.sha256(data[i:i + PIECE]).digest() for i in range(0, len(data), PIECE))
    return Metainfo(name, len(data), PIECE, pieces)


@dataclass
class Shared:
    meta: Metainfo
    data: bytes
    have: bytearray | None = None
    sent: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    spreader: Spreader | None = None

    def __post_init__(self) -> None:
        self.sent = self.sent or [0] * self.meta.num_pieces
        self.queued = self.queued or [0] * self.meta.num_pieces

    def has(self, index: int) -> bool:
        return 0 <= index < self.meta.num_pieces and (self.have is None or bool(self.have[index]))

    def bitfield(self) -> bytes:
        n = self.meta.num_pieces
        return wire.pack_bits(self.have if self.have is not None else bytearray(b"\x01" * n), n)

    def piece(self, index: int) -> bytes:
        return self.data[index * PIECE:(index + 1) * PIECE]


@dataclass
class Library:
    sources: dict[bytes, Shared] = field(default_factory=dict)
    paused: set[bytes] = field(default_factory=set)

    def catalogue(self) -> list[ps.CatalogueEntry]:
        return [{"name": s.meta.name, "size": s.meta.length, "info_hash": ih.hex(), "complete": s.have is None}
                for ih, s in self.sources.items()]


class Link:
    """One downloader session wired to one serving session; `pump` moves bytes until both
    are idle, in `chunk`-byte pieces when given, doing what the adapters do with actions."""

    def __init__(self, shared: Shared, picker: PiecePicker, peer: str = "server", depth: int = ps.DEPTH,
                 refill: int = ps.REFILL, chunk: int = 0) -> None:
        self.shared = shared
        self.library = Library({shared.meta.info_hash: shared})
        self.counters = PeerCounters()
        self.down = DownloadSession(peer, shared.meta.info_hash, picker, self.counters, depth, refill)
        self.serve: ServeSession[Shared] = ServeSession(self.library)
        self.chunk = chunk
        self.corrupt: set[int] = set()
        self.stored: dict[int, bytes] = {}
        self.ends: list[Action] = []  # PeerBad / Close seen by the downloader
        self.served_closed: list[Close] = []
        self.cancels: list[Cancel] = []
        self.wakes = 0
        self.max_outstanding = 0
        self.to_server = bytearray(self.down.start())
        self.to_client = bytearray()
        self.now = 0.0

    def _chunks(self, data: bytes) -> list[bytes]:
        size = self.chunk or len(data) or 1
        return [data[i:i + size] for i in range(0, len(data), size)]

    def to_client_actions(self, actions: list[Action]) -> None:
        todo = deque(actions)
        while todo:
            act = todo.popleft()
            if isinstance(act, Verify):
                todo.extend(self.down.piece_verified(act.index, self.shared.meta.verify_piece(act.index, act.data)))
            elif isinstance(act, Store):
                self.stored[act.index] = act.data
                todo.extend(self.down.piece_stored(act.index))
            elif isinstance(act, Cancel):
                self.cancels.append(act)
            elif isinstance(act, Wake):
                self.wakes += 1
            elif isinstance(act, (PeerBad, Close)):
                self.ends.append(act)

    def feed_client(self, data: bytes) -> None:
        for part in self._chunks(data):
            self.now += 0.001
            self.to_client_actions(self.down.receive_data(part, self.now))

    def step(self) -> bool:
        """One round each way; False when nothing moved."""
        self.to_server += self.down.fill()
        self.max_outstanding = max(self.max_outstanding, self.down.outstanding)
        moved = bool(self.to_server)
        data, self.to_server = bytes(self.to_server), bytearray()
        for part in self._chunks(data):
            for act in self.serve.receive_data(part):
                if isinstance(act, Send):
                    self.to_client += act.data
                elif isinstance(act, Close):
                    self.served_closed.append(act)
        self.to_client += self.serve.take_control()  # HAVE, CHOKE, PEERS owed
        while isinstance(read := self.serve.next_read(), Read):
            pieces = [self.shared.piece(i) for i in read.indexes]
            pieces = [bytes([p[0] ^ 0xFF]) + p[1:] if i in self.corrupt else p
                      for i, p in zip(read.indexes, pieces, strict=True)]
            self.to_client += self.serve.pieces_read(read.indexes, pieces)
        moved = moved or bool(self.to_client)
        data, self.to_client = bytes(self.to_client), bytearray()
        self.feed_client(data)
        return moved

    def pump(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError("sessions never went idle")


def shared_file(pieces: float, have: bytearray | None = None) -> Shared:
    data = os.urandom(int(pieces * PIECE))
    return Shared(meta_for(data), data, have)


def frames(data: bytes) -> list[wire.Message]:
    return wire.Decoder().feed(data)


def handshake(link: Link) -> None:
    """INTERESTED out, BITFIELD back, no requests yet."""
    link.feed_client(b"".join(act.data for act in link.serve.receive_data(bytes(link.to_server))
                              if isinstance(act, Send)))
    link.to_server.clear()
    assert link.down.ready


# ---------------------------------------------------------------- the whole exchange


def test_core_imports_no_trio_or_libp2p_and_reads_no_clock() -> None:
    tree = ast.parse(Path(ps.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in names if m.split(".")[0] in ("trio", "libp2p", "time", "os", "socket")}


def test_full_small_file() -> None:
    shared = shared_file(40.5)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker)
    link.pump()
    assert picker.complete and link.ends == [] and link.served_closed == []
    assert b"".join(link.stored[i] for i in range(shared.meta.num_pieces)) == shared.data
    assert link.counters.pieces == shared.meta.num_pieces and link.counters.bad_pieces == 0
    assert link.counters.meter.total == len(shared.data)
    assert link.down.outstanding == 0 and link.serve.queued == 0


def test_frames_split_into_single_bytes() -> None:
    shared = shared_file(6.3)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker, chunk=1)
    link.pump()
    assert picker.complete and link.ends == []
    assert b"".join(link.stored[i] for i in range(shared.meta.num_pieces)) == shared.data


def test_request_window_is_bounded_and_refilled_in_rounds() -> None:
    shared = shared_file(40)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker, depth=8, refill=4)
    handshake(link)
    first = frames(link.down.fill())
    assert [m.type for m in first] == [wire.REQUEST] * 8 and link.down.outstanding == 8
    assert link.down.fill() == b""  # the window is full
    answer = b"".join(wire.encode_piece_header(m.index, PIECE) + shared.piece(m.index) for m in first)
    cut = [i * (9 + PIECE) for i in range(5)]  # where each answer ends
    link.feed_client(answer[:cut[3]])  # three answered: room 3 < refill
    assert link.down.outstanding == 5 and link.down.fill() == b"" and link.wakes == 0
    link.feed_client(answer[cut[3]:cut[4]])  # a fourth: a round's worth of room
    assert link.wakes == 1
    more = link.down.fill()
    assert [m.type for m in frames(more)] == [wire.REQUEST] * 4
    link.to_server += more  # the server answers these and the rest
    link.feed_client(answer[cut[4]:])
    link.pump()
    assert picker.complete and link.max_outstanding <= 8


def test_tail_is_requested_below_a_round() -> None:
    shared = shared_file(3)  # fewer pieces than a refill round
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker, depth=8, refill=4)
    handshake(link)
    assert len(frames(link.down.fill())) == 3


def test_endgame_cancels_the_other_copy_and_takes_a_late_duplicate() -> None:
    shared = shared_file(2)
    picker = PiecePicker(shared.meta.num_pieces)
    a, b = Link(shared, picker, peer="a"), Link(shared, picker, peer="b")
    handshake(a)
    handshake(b)
    asked_a = [m.index for m in frames(a.down.fill())]
    asked_b = [m.index for m in frames(b.down.fill())]  # endgame: the same pieces again
    assert sorted(asked_a) == sorted(asked_b) == [0, 1]
    a.feed_client(wire.encode_piece_header(0, PIECE) + shared.piece(0))
    assert a.cancels == [Cancel("b", 0)]
    b.down.cancel(0)
    out = frames(b.down.fill())
    assert [(m.type, m.index) for m in out] == [(wire.CANCEL, 0)]
    b.feed_client(wire.encode_piece_header(0, PIECE) + shared.piece(0))  # sent before the cancel arrived
    assert b.ends == [] and b.stored == {} and b.counters.meter.total == PIECE
    b.feed_client(wire.encode_piece_header(1, PIECE) + shared.piece(1))
    assert picker.complete and a.cancels == [Cancel("b", 0)] and b.cancels == [Cancel("a", 1)]


# ---------------------------------------------------------------- misbehaving peers


def test_piece_nobody_asked_for_closes_the_session() -> None:
    shared = shared_file(4)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker)
    handshake(link)
    link.feed_client(wire.encode_piece_header(2, PIECE) + shared.piece(2))
    assert link.ends == [Close("piece 2 was not requested")] and link.stored == {}
    assert link.down.closed and link.down.fill() == b""


def test_reject_nobody_asked_for_closes_the_session() -> None:
    shared = shared_file(4)
    link = Link(shared, PiecePicker(shared.meta.num_pieces))
    handshake(link)
    link.feed_client(wire.encode_index(wire.REJECT, 1))
    assert link.ends == [Close("reject of piece 1, which was not requested")]


def test_corrupt_piece_marks_the_peer_bad() -> None:
    shared = shared_file(10)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker)
    link.corrupt = {3}
    link.pump()
    assert link.ends == [PeerBad("piece 3 failed its SHA-256 check")]
    assert link.counters.bad_pieces == 1 and 3 not in link.stored and not picker.have[3]
    assert 3 not in picker.in_flight and link.down.closed


def test_malformed_frames_close_the_session() -> None:
    shared = shared_file(4)
    bad_frames = [
        wire.encode_index(wire.REQUEST, 1),  # a client message from a server
        b"\x00\x00\x00\x03" + bytes([wire.HAVE]) + b"\x00\x00",  # HAVE with a short body
        b"\x00\x00\x00\x01\x99",  # unknown type
        wire.encode_index(wire.HAVE, 4),  # out of range
        wire.encode_piece_header(9, PIECE) + b"\0" * PIECE,  # out of range
        wire.encode_bitfield(shared.meta.info_hash, b"\xf0"),  # a second bitfield
    ]
    for frame in bad_frames:
        link = Link(shared, PiecePicker(shared.meta.num_pieces))
        handshake(link)
        link.feed_client(frame)
        assert len(link.ends) == 1 and isinstance(link.ends[0], Close) and link.ends[0].reason, frame


def test_bad_handshakes() -> None:
    shared = shared_file(12)
    cases = {
        wire.encode_error("unknown info hash"): "unknown info hash",
        wire.encode_bitfield(os.urandom(32), b"\xff\xf0"): "expected a bitfield",
        wire.encode_bitfield(shared.meta.info_hash, b"\xff\xff"): "bitfield has spare bits set",
        wire.encode_bitfield(shared.meta.info_hash, b"\xff"): "bitfield is 1 bytes for 12 pieces",
        wire.encode_index(wire.HAVE, 1): "expected a bitfield",
        b"": "peer closed the stream",
    }
    for data, reason in cases.items():
        link = Link(shared, PiecePicker(shared.meta.num_pieces))
        link.feed_client(data) if data else link.to_client_actions(link.down.receive_data(b"", 0.0))
        assert link.ends == [Close(reason)] and not link.down.ready


def test_oversized_frame_is_refused_on_its_header() -> None:
    shared = shared_file(4)
    link = Link(shared, PiecePicker(shared.meta.num_pieces))
    handshake(link)
    link.feed_client((wire.MAX_FRAME + 1).to_bytes(4, "big") + bytes([wire.PIECE]))
    assert link.ends == [Close(f"frame length {wire.MAX_FRAME + 1} out of range")]
    link = Link(shared, PiecePicker(shared.meta.num_pieces))
    handshake(link)
    link.feed_client((ps.wire.PIECE_LENGTH + 6).to_bytes(4, "big") + bytes([wire.PIECE]))  # a piece too long
    assert len(link.ends) == 1 and "bad length" in link.ends[0].reason  # type: ignore[union-attr]
    serve: ServeSession[Shared] = ServeSession(Library({shared.meta.info_hash: shared}))
    assert serve.receive_data(b"\x00\x10\x00\x00" + bytes([wire.REQUEST])) == [
        Close(f"message 0x{wire.REQUEST:02x} has a bad length {0x100000 - 1}")]


def test_peer_that_has_nothing() -> None:
    shared = shared_file(5, have=bytearray(5))
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker)
    link.pump()
    assert link.down.ready and link.ends == [] and link.stored == {} and link.down.outstanding == 0
    assert not picker.complete and picker.availability == [0] * 5


def test_paused_server_rejects_and_the_pieces_are_freed() -> None:
    shared = shared_file(5)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker)
    handshake(link)
    link.library.paused.add(shared.meta.info_hash)
    link.pump()
    assert link.ends == [] and link.stored == {} and picker.in_flight == {}
    assert picker.availability == [0] * 5  # the peer no longer offers them, so no retry loop


# ---------------------------------------------------------------- serving side


def serving(pieces: int = 2000) -> tuple[Shared, ServeSession[Shared], Library]:
    shared = Shared(Metainfo("f.bin", pieces * PIECE, PIECE, (b"\0" * 32,) * pieces), b"")
    library = Library({shared.meta.info_hash: shared})
    return shared, ServeSession(library), library


def test_server_queue_bound_duplicates_cancel_and_batches() -> None:
    shared, serve, _ = serving()
    assert serve.receive_data(wire.encode_index(wire.REQUEST, 0)) == [Close("REQUEST before INTERESTED")]
    shared, serve, _ = serving()
    (hello,) = serve.receive_data(wire.encode_interested(shared.meta.info_hash))
    assert isinstance(hello, Send) and frames(hello.data)[0].type == wire.BITFIELD
    requests = b"".join(wire.encode_index(wire.REQUEST, i) for i in [*range(ps.MAX_QUEUED), 5, 6])
    assert serve.receive_data(requests) == [] and serve.queued == ps.MAX_QUEUED  # duplicates ignored
    assert serve.receive_data(wire.encode_index(wire.CANCEL, 0)) == [] and serve.queued == ps.MAX_QUEUED - 1
    read = serve.next_read()
    assert isinstance(read, Read) and read.indexes == list(range(1, ps.MAX_QUEUED))  # 1 MiB: all of them
    assert serve.receive_data(wire.encode_index(wire.REQUEST, 1999)) == [] and serve.queued == 1
    assert serve.receive_data(b"".join(wire.encode_index(wire.REQUEST, i) for i in range(ps.MAX_QUEUED))) == [
        Close(f"more than {ps.MAX_QUEUED} requests outstanding")]


def test_server_rejects_what_it_lacks_and_failed_reads() -> None:
    shared, serve, _ = serving(4)
    shared.have = bytearray([1, 0, 1, 1])
    serve.receive_data(wire.encode_interested(shared.meta.info_hash))
    # REJECTs go out with the writer's frames (take_control), never from the reader
    assert serve.receive_data(wire.encode_index(wire.REQUEST, 1) + wire.encode_index(wire.REQUEST, 7)) == []
    assert serve.pending_control
    assert [(m.type, m.index) for m in frames(serve.take_control())] == [(wire.REJECT, 1), (wire.REJECT, 7)]
    serve.receive_data(wire.encode_index(wire.REQUEST, 2) + wire.encode_index(wire.REQUEST, 3))
    read = serve.next_read()
    assert isinstance(read, Read)
    assert [(m.type, m.index) for m in frames(serve.pieces_read(read.indexes, None))] == [
        (wire.REJECT, 2), (wire.REJECT, 3)]
    assert serve.next_read() is None
    assert serve.receive_data(b"") == [] and serve.next_read() == Close()


def test_server_list_meta_and_unknown_hashes() -> None:
    shared, serve, library = serving(3)
    (reply,) = serve.receive_data(wire.encode_list() + wire.encode_get_meta(shared.meta.info_hash)
                                  + wire.encode_get_meta(b"\1" * 32))
    assert isinstance(reply, Send)
    cat, meta, err = frames(reply.data)
    assert cat.json()[0]["info_hash"] == shared.meta.info_hash_hex and meta.data == shared.meta.encode()
    assert err.type == wire.ERROR and err.data == b"unknown info hash"
    other = Shared(Metainfo("g.bin", PIECE, PIECE, (b"\1" * 32,)), b"")
    library.sources[other.meta.info_hash] = other
    serve.receive_data(wire.encode_interested(shared.meta.info_hash))
    assert serve.receive_data(wire.encode_interested(other.meta.info_hash)) == [
        Close("one stream serves one torrent")]


# ---------------------------------------------------------------- swarm: choke, HAVE, stall, depth


def test_choke_frees_requests_for_others_and_unchoke_resumes() -> None:
    shared = shared_file(20)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker, depth=8, refill=4)
    handshake(link)
    asked = [m.index for m in frames(link.down.fill())]
    assert len(asked) == 8
    link.serve.receive_data(link.down.fill() or wire.encode_index(wire.REQUEST, asked[0]))
    assert link.serve.set_choked(True) and not link.serve.set_choked(True)
    assert link.serve.queued == 0  # queued requests dropped
    link.feed_client(link.serve.take_control())
    assert link.down.choked and link.down.outstanding == 0 and not picker.in_flight
    assert link.down.fill() == b""  # no requests while choked
    # a request that crossed the CHOKE is dropped silently (no REJECT: the client freed it)
    assert link.serve.receive_data(wire.encode_index(wire.REQUEST, 0)) == [] and link.serve.queued == 0
    link.serve.set_choked(False)
    link.feed_client(link.serve.take_control())
    assert not link.down.choked
    link.pump()
    assert picker.complete and link.ends == []


def test_have_frames_reach_the_downloader_and_its_picker() -> None:
    have = bytearray(10)
    shared = shared_file(10, have)
    picker = PiecePicker(10)
    link = Link(shared, picker)
    handshake(link)
    assert link.down.fill() == b""  # the peer has nothing yet
    have[3] = 1
    link.serve.have(3)
    link.feed_client(link.serve.take_control())
    assert picker.peer_bits["server"][3] == 1 and picker.availability[3] == 1
    assert [m.index for m in frames(link.down.fill())] == [3]
    assert link.serve.take_control() == b""


def test_a_stalled_peer_is_snubbed_and_its_requests_go_to_another() -> None:
    shared = shared_file(12)
    picker = PiecePicker(shared.meta.num_pieces)
    slow, fast = Link(shared, picker, peer="slow"), Link(shared, picker, peer="fast")
    handshake(slow)
    handshake(fast)
    held = [m.index for m in frames(slow.down.fill(now=1.0))]
    assert len(held) == ps.START_DEPTH or len(held) == shared.meta.num_pieces
    assert slow.down.check_stall(1.0 + ps.STALL_AFTER - 0.1) == []
    acts = slow.down.check_stall(1.0 + ps.STALL_AFTER + 0.1)
    assert any(isinstance(a, ps.Changed) for a in acts)
    assert slow.down.snubbed and slow.down.outstanding == 0
    cancels = frames(slow.down.fill(now=7.0))
    assert sorted(m.index for m in cancels if m.type == wire.CANCEL) == sorted(held)
    assert [m.type for m in cancels].count(wire.REQUEST) <= 1  # snubbed: one request at a time
    fast.pump()
    assert picker.complete and set(fast.stored) >= set(held) - set(slow.stored)


def test_request_depth_follows_the_peer_rate() -> None:
    shared = shared_file(4)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker)
    session = link.down
    assert session.target_depth(0.0) == ps.START_DEPTH  # no rate yet
    meter = link.counters.meter
    for t in range(20):  # 25 KB/s: a slow peer holds the minimum
        meter.add(6_250, t * 0.25)
    assert session.target_depth(5.0) == ps.MIN_DEPTH
    fast = Link(shared, picker, peer="fast")
    for t in range(20):  # 40 MB/s: rate x HORIZON / piece
        fast.counters.meter.add(10_000_000, t * 0.25)
    depth = fast.down.target_depth(5.0)
    rate = fast.counters.meter.rate(5.0)
    assert depth == min(ps.DEPTH, -(-int(rate * ps.HORIZON) // PIECE_LENGTH) + 2) and depth > 4 * ps.MIN_DEPTH


def test_server_spreads_pieces_uploaded_fewest_times_first() -> None:
    shared = shared_file(8)
    shared.sent[:4] = [3, 3, 3, 3]  # pieces 0-3 already went out to other downloaders
    link = Link(shared, PiecePicker(8))
    handshake(link)
    link.serve.receive_data(b"".join(wire.encode_index(wire.REQUEST, i) for i in range(8)))
    read = link.serve.next_read()
    assert isinstance(read, ps.Read) and read.indexes[:4] == [4, 5, 6, 7]
    assert PIECE * 8 <= ps.BATCH_BYTES


def test_server_sends_last_what_another_downloader_has_queued() -> None:
    shared = shared_file(8)
    a, b = Link(shared, PiecePicker(8), peer="a"), Link(shared, PiecePicker(8), peer="b")
    for link in (a, b):
        handshake(link)
    a.serve.receive_data(b"".join(wire.encode_index(wire.REQUEST, i) for i in range(4)))
    b.serve.receive_data(b"".join(wire.encode_index(wire.REQUEST, i) for i in range(8)))
    assert shared.queued == [2, 2, 2, 2, 1, 1, 1, 1]
    read = b.serve.next_read()  # a waits for 0-3 too: b gets the pieces only it asked for first
    assert isinstance(read, ps.Read) and read.indexes[:4] == [4, 5, 6, 7]
    assert shared.sent == [1] * 8  # counted once read (one batch here), before the write ends
    a.serve.receive_data(wire.encode_index(wire.CANCEL, 0))
    a.serve.set_choked(True)  # drops 1-3
    assert shared.queued[:4] == [0, 0, 0, 0]
    a.serve.set_choked(False)
    a.serve.receive_data(wire.encode_index(wire.REQUEST, 5))
    a.serve.release()  # the stream ended
    assert shared.queued == [0] * 8


def test_peers_named_by_the_server_reach_the_downloader() -> None:
    shared = shared_file(4)
    link = Link(shared, PiecePicker(4))
    handshake(link)
    named = [("12D3KooWfellow", ["/ip4/198.18.1.11/tcp/4001"]), ("12D3KooWother", [])]
    link.serve.tell_peers(named)
    actions = link.down.receive_data(link.serve.take_control(), 1.0)
    assert actions == [ps.Peers(named)]
    # malformed entries are skipped, a body that is not a JSON list ends the stream
    body = b'[["ok",["/ip4/1.2.3.4/tcp/1"]],[1,[]],["x",[2]],"junk"]'
    assert wire.decode_peers(body) == [("ok", ["/ip4/1.2.3.4/tcp/1"])]
    assert isinstance(link.down.receive_data(wire.frame(wire.PEERS, b"{}"), 2.0)[0], ps.Close)


def test_a_spreading_seed_sends_each_piece_once_before_any_twice() -> None:
    shared = shared_file(100)
    spreader = shared.spreader = Spreader(100, offer=8)
    a, b = Link(shared, PiecePicker(100), peer="a"), Link(shared, PiecePicker(100), peer="b")
    handshake(a)  # a alone: the whole bitfield
    assert sum(a.down.picker.peer_bits["a"]) == 100
    handshake(b)  # two downloaders: b is offered 8 pieces, not the whole file
    assert sum(b.down.picker.peer_bits["b"]) == 8
    for _ in range(1000):
        moved = a.step()
        moved = b.step() or moved
        if spreader.unsent:
            assert max(shared.sent) == 1  # no piece left twice before every piece left once
        if not moved:
            break
    # then (these two cannot trade) each was told of everything and got the rest from the seed
    assert spreader.unsent == 0 and a.down.picker.complete and b.down.picker.complete
    assert a.ends == [] and b.ends == [] and not a.served_closed and not b.served_closed
    assert sum(shared.sent) == 200


# ---------------------------------------------------------------- asked before the metainfo


def early_link(shared: Shared, picker: PiecePicker) -> Link:
    """A link whose INTERESTED went out with REQUEST 0, before the downloader had the metainfo
    (the transfer's first early stream); the session is told so when it starts."""
    link = Link(shared, picker)
    link.to_server += wire.encode_index(wire.REQUEST, 0)
    link.down.asked_early((0,), sent_at=0.0)
    return link


def test_piece_asked_with_interested_comes_back_with_the_bitfield() -> None:
    shared = shared_file(6)
    picker = PiecePicker(shared.meta.num_pieces)
    link = early_link(shared, picker)
    link.step()  # one round trip: BITFIELD and piece 0 in the same answer
    assert link.stored == {0: shared.piece(0)} and link.ends == []
    link.pump()
    assert picker.complete and link.ends == [] and link.counters.pieces == shared.meta.num_pieces
    assert b"".join(link.stored[i] for i in range(shared.meta.num_pieces)) == shared.data


def test_early_piece_counts_in_flight_until_it_arrives() -> None:
    shared = shared_file(6)
    picker = PiecePicker(shared.meta.num_pieces)
    link = early_link(shared, picker)
    served = [act.data for act in link.serve.receive_data(bytes(link.to_server)) if isinstance(act, Send)]
    link.to_server.clear()
    link.feed_client(b"".join(served))  # the BITFIELD only: piece 0 still on its way
    assert link.down.ready and link.down.outstanding == 1 and 0 not in picker.pick("someone else", 6)


def test_early_piece_rejected_or_unknown() -> None:
    shared = shared_file(3, have=bytearray([0, 1, 1]))  # a fellow downloader without piece 0
    picker = PiecePicker(shared.meta.num_pieces)
    link = early_link(shared, picker)
    link.pump()
    assert link.ends == [] and 0 not in link.stored and link.down.outstanding == 0
    # without asked_early, that REJECT (or piece) is one nobody asked for: the session closes
    plain = Link(shared, PiecePicker(shared.meta.num_pieces))
    plain.to_server += wire.encode_index(wire.REQUEST, 0)
    plain.step()
    assert plain.ends == [Close("reject of piece 0, which was not requested")]


def test_early_piece_does_not_make_the_peer_look_stalled() -> None:
    """The early request went out at `sent_at`: a stall check soon after must not snub the
    peer as if it had been silent since the clock's epoch (it did: in a 1 + 8 swarm every
    downloader whose piece 0 the seed REJECTed started with the seed snubbed)."""
    shared = shared_file(6)
    picker = PiecePicker(shared.meta.num_pieces)
    link = Link(shared, picker)
    link.to_server += wire.encode_index(wire.REQUEST, 0)
    link.down.asked_early((0,), sent_at=5000.0)
    served = [act.data for act in link.serve.receive_data(bytes(link.to_server)) if isinstance(act, Send)]
    link.to_server.clear()
    link.feed_client(b"".join(served))  # the BITFIELD only: piece 0 still on its way
    assert link.down.check_stall(5000.5) == [] and not link.down.snubbed
