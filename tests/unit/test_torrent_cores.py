"""Pure cores of the torrent capability, tested without sockets."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from punch_net.torrent import PIECE_LENGTH, wire
from punch_net.torrent.catalogue import ShareIndex
from punch_net.torrent.metainfo import MAGIC, Metainfo, MetainfoError, decode, hash_file, parse_info_hash
from punch_net.torrent.names import UnsafeName, check_name
from punch_net.torrent.picker import PiecePicker
from punch_net.torrent.rates import RateMeter, eta_seconds
from punch_net.torrent.resume import ResumeError, ResumeRecord, decode_record
from punch_net.torrent.storage import PartFile, StorageError, WholeHasher, existing_matches


def meta_for(data: bytes, name: str = "f.bin") -> Metainfo:
    pieces = tuple(hashlib.sha256(data[i:i + PIECE_LENGTH]).digest() for i in range(0, len(data), PIECE_LENGTH))
    return Metainfo(name, len(data), PIECE_LENGTH, pieces)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/etc/passwd", "a\\b", "a\x00b", "x\ny", "\u202eevil",
                                  "a" * 256, "../../x"])
def test_unsafe_names_refused(name: str) -> None:
    with pytest.raises(UnsafeName):
        check_name(name)


@pytest.mark.parametrize("name", ["file.bin", "..hidden", "a b ü.txt", "-dash", "a" * 255, "日本語"])
def test_plain_names_accepted(name: str) -> None:
    assert check_name(name) == name


# ---------------------------------------------------------------- metainfo


@pytest.mark.parametrize("size", [0, 1, PIECE_LENGTH, PIECE_LENGTH + 1, 3 * PIECE_LENGTH - 7])
def test_hash_file_and_roundtrip(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f.bin").write_bytes(data)
    seen: list[tuple[int, int]] = []
    meta = hash_file(tmp_path / "f.bin", progress=lambda d, t: seen.append((d, t)))
    assert meta == meta_for(data)
    assert meta.num_pieces == (size + PIECE_LENGTH - 1) // PIECE_LENGTH
    encoded = meta.encode()
    assert decode(encoded) == meta
    assert meta.info_hash == hashlib.sha256(encoded).digest()
    if size:
        assert seen[-1] == (size, size)
        assert meta.piece_size(meta.num_pieces - 1) == size - (meta.num_pieces - 1) * PIECE_LENGTH


def test_hash_file_handles_short_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces stay aligned even when the OS returns reads that are not piece multiples."""
    data = os.urandom(5 * PIECE_LENGTH + 3)
    (tmp_path / "f.bin").write_bytes(data)
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 10_000)))
    assert hash_file(tmp_path / "f.bin") == meta_for(data)


def test_encoding_is_canonical_and_names_matter() -> None:
    data = os.urandom(100)
    a, b = meta_for(data, "a"), meta_for(data, "b")
    assert a.encode() != b.encode() and a.info_hash != b.info_hash
    enc = a.encode()
    assert enc.startswith(MAGIC)
    for bad in (enc + b"\0", enc[:-1], b"X" + enc[1:]):
        with pytest.raises(MetainfoError):
            decode(bad)


@pytest.mark.parametrize("evil", ["../evil", "/abs", "a/b", "nul\x00", "..", ""])
def test_decode_refuses_malicious_names(evil: str) -> None:
    name = evil.encode()
    data = os.urandom(10)
    body = MAGIC + len(name).to_bytes(2, "big") + name + len(data).to_bytes(8, "big") + \
        PIECE_LENGTH.to_bytes(4, "big") + (1).to_bytes(4, "big") + hashlib.sha256(data).digest()
    with pytest.raises(MetainfoError, match=r"refused|name"):
        decode(body)


def test_decode_refuses_inconsistent_counts() -> None:
    name = b"x"
    body = MAGIC + b"\x00\x01" + name + (PIECE_LENGTH + 1).to_bytes(8, "big") + \
        PIECE_LENGTH.to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\0" * 32
    with pytest.raises(MetainfoError):
        decode(body)


def test_parse_info_hash() -> None:
    assert parse_info_hash("AB" * 32) == bytes([0xAB]) * 32
    for bad in ("ab", "zz" * 32, "a" * 65):
        with pytest.raises(ValueError):
            parse_info_hash(bad)


# ---------------------------------------------------------------- wire


def test_wire_roundtrip_in_arbitrary_chunks() -> None:
    ih = os.urandom(32)
    piece = os.urandom(PIECE_LENGTH)
    stream = b"".join([
        wire.encode_list(), wire.encode_get_meta(ih), wire.encode_interested(ih),
        wire.encode_index(wire.REQUEST, 7), wire.encode_index(wire.CANCEL, 7),
        wire.encode_catalogue([{"name": "a", "size": 1, "info_hash": ih.hex()}]),
        wire.encode_meta(ih, b"meta"), wire.encode_bitfield(ih, b"\xf0"),
        wire.encode_piece_header(3, len(piece)) + piece, wire.encode_index(wire.HAVE, 9),
        wire.encode_index(wire.REJECT, 2), wire.encode_error("nope"),
    ])
    rng = random.Random(1)
    dec = wire.Decoder()
    out: list[wire.Message] = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 5000)
        out += dec.feed(stream[pos:pos + step])
        pos += step
    assert [m.type for m in out] == [wire.LIST, wire.GET_META, wire.INTERESTED, wire.REQUEST, wire.CANCEL,
                                     wire.CATALOGUE, wire.META, wire.BITFIELD, wire.PIECE, wire.HAVE,
                                     wire.REJECT, wire.ERROR]
    assert out[1].info_hash == ih and out[3].index == 7 and out[8].data == piece and out[8].index == 3
    assert out[5].json()[0]["name"] == "a" and out[6].data == b"meta" and out[7].data == b"\xf0"
    assert dec.buffered == 0


@pytest.mark.parametrize("frame", [
    b"\x00\x00\x00\x00\x01",  # zero length
    b"\xff\xff\xff\xff\x84",  # huge
    b"\x00\x00\x00\x02\x99\x00",  # unknown type
    b"\x00\x00\x00\x03\x04\x00\x00",  # REQUEST with a short body
    b"\x00\x02\x00\x06\x84" + b"\0" * 10,  # PIECE longer than a piece (announced)
    b"\x00\x00\x00\x03\x81[]",  # valid, but...
])
def test_wire_rejects_garbage(frame: bytes) -> None:
    dec = wire.Decoder(wire.CLIENT_TYPES)  # ...a catalogue is not something a client sends
    with pytest.raises(wire.ProtocolError):
        dec.feed(frame)


def test_wire_rejects_bad_catalogue_json() -> None:
    with pytest.raises(wire.ProtocolError):
        wire.Decoder().feed(wire.frame(wire.CATALOGUE, b"{not json"))


def test_bitfield_pack_unpack() -> None:
    have = bytearray([1, 0, 1, 1, 0, 0, 0, 0, 1, 1])
    bits = wire.pack_bits(have, 10)
    assert bits == bytes([0b10110000, 0b11000000])
    assert wire.unpack_bits(bits, 10) == have
    with pytest.raises(wire.ProtocolError):
        wire.unpack_bits(bits, 17)
    with pytest.raises(wire.ProtocolError):
        wire.unpack_bits(bytes([0, 0b11100000]), 10)  # spare bit set


# ---------------------------------------------------------------- picker


def test_picker_rarest_first_and_no_duplicates() -> None:
    p = PiecePicker(6)
    p.add_peer("a", bytearray([1, 1, 1, 1, 1, 1]))
    p.add_peer("b", bytearray([1, 1, 1, 1, 0, 0]))
    first = p.pick("a", 2)
    assert sorted(first) == [4, 5]  # only a has 4 and 5: rarest
    got_b = p.pick("b", 10)
    assert sorted(got_b) == [0, 1, 2, 3] and not set(got_b) & set(first)
    assert p.pick("b", 1) == [] or p.endgame  # nothing left but endgame duplicates


def test_picker_endgame_duplicates_and_cancels() -> None:
    p = PiecePicker(2)
    p.add_peer("a", bytearray([1, 1]))
    p.add_peer("b", bytearray([1, 1]))
    assert sorted(p.pick("a", 5)) == [0, 1]
    assert p.endgame
    dup = p.pick("b", 5)
    assert sorted(dup) == [0, 1]
    assert p.received("b", 0) == ["a"]  # a must be told to cancel piece 0
    assert p.have_count() == 1 and not p.complete
    p.received("a", 1)
    assert p.complete


def test_picker_failure_and_peer_loss_free_pieces() -> None:
    p = PiecePicker(3)
    p.add_peer("a", bytearray([1, 1, 1]))
    picked = p.pick("a", 3)
    p.failed("a", picked[0])
    p.peer_lacks("a", picked[0])
    p.add_peer("b", bytearray([1, 1, 1]))
    assert p.pick("b", 1) == [picked[0]]
    assert sorted(p.remove_peer("a")) == sorted(picked[1:])
    assert sorted(p.pick("b", 5)) == sorted(picked[1:])


def test_picker_resumes_from_have_and_unverify() -> None:
    p = PiecePicker(4, bytearray([1, 0, 1, 0]))
    p.add_peer("a", bytearray([1, 1, 1, 1]))
    assert sorted(p.pick("a", 10)) == [1, 3]
    p.unverify(0)
    assert p.pick("a", 10) == [0]


def test_picker_large_is_fast() -> None:
    n = 16384  # 1 GiB
    p = PiecePicker(n)
    p.add_peer("a", bytearray(b"\x01" * n))
    done = 0
    while not p.complete:
        for i in p.pick("a", 64):
            p.received("a", i)
            done += 1
    assert done == n


# ---------------------------------------------------------------- rates


def test_rate_meter_and_eta() -> None:
    m = RateMeter(window=2.0, bucket=0.5)
    for i in range(8):
        m.add(1000, 100.0 + i * 0.25)
    assert 1500 <= m.rate(102.0) <= 4500
    assert m.rate(200.0) == 0.0
    assert eta_seconds(1000, 100.0) == 10.0 and eta_seconds(5, 0) is None and eta_seconds(0, 0) == 0.0


# ---------------------------------------------------------------- resume + storage


def test_resume_record_roundtrip_and_mismatch() -> None:
    meta = meta_for(os.urandom(3 * PIECE_LENGTH))
    rec = ResumeRecord(meta.info_hash_hex, bytearray([1, 0, 1]))
    assert decode_record(rec.encode(), meta).have == bytearray([1, 0, 1])
    other = meta_for(os.urandom(3 * PIECE_LENGTH))
    wrong_hash = ResumeRecord("00" * 32, bytearray(3)).encode()
    for data in (rec.encode().replace(b"1,", b"2,", 1), b"{}", b"garbage", wrong_hash):
        with pytest.raises(ResumeError):
            decode_record(data, other if data.startswith(b'{"version":1') else meta)


def test_part_file_resume_and_finish(tmp_path: Path) -> None:
    data = os.urandom(2 * PIECE_LENGTH + 5)
    meta = meta_for(data)
    part = PartFile(tmp_path, meta)
    assert part.open() == bytearray(3)
    part.write_piece(2, data[2 * PIECE_LENGTH:])
    part.write_piece(0, data[:PIECE_LENGTH])
    part.checkpoint(bytearray([1, 0, 1]))
    part.close()
    again = PartFile(tmp_path, meta)
    assert again.open() == bytearray([1, 0, 1])  # resumed
    assert again.verify_all() == [1]  # piece 1 never written
    again.write_piece(1, data[PIECE_LENGTH:2 * PIECE_LENGTH])
    assert again.verify_all() == []
    assert again.verify_range(0, 1) == [] and again.verify_range(1, 3) == []
    whole = WholeHasher()
    again.hash_prefix(whole, PIECE_LENGTH)  # what the follower does while pieces arrive
    assert whole.offset == PIECE_LENGTH
    again.hash_prefix(whole, meta.length)
    assert whole.hexdigest() == hashlib.sha256(data).hexdigest()
    again.sync()
    again.finish()
    again.close()
    assert (tmp_path / "f.bin").read_bytes() == data
    assert not (tmp_path / "f.bin.part").exists() and not (tmp_path / "f.bin.part.resume").exists()
    assert existing_matches(tmp_path / "f.bin", meta)


def test_part_file_ignores_record_longer_than_part(tmp_path: Path) -> None:
    data = os.urandom(2 * PIECE_LENGTH)
    meta = meta_for(data)
    (tmp_path / "f.bin.part").write_bytes(b"")
    (tmp_path / "f.bin.part.resume").write_bytes(ResumeRecord(meta.info_hash_hex, bytearray([1, 1])).encode())
    part = PartFile(tmp_path, meta)
    assert part.open() == bytearray(2)
    part.close()


def test_part_file_log_keeps_pieces_written_after_the_last_record(tmp_path: Path) -> None:
    """A SIGKILL after the last checkpoint: the log names the pieces written since; only
    those are hashed again on resume, and one that is not on disk right is not claimed."""
    data = os.urandom(4 * PIECE_LENGTH)
    meta = meta_for(data)
    part = PartFile(tmp_path, meta)
    assert part.open() == bytearray(4)
    part.write_piece(0, data[:PIECE_LENGTH])
    part.checkpoint(bytearray([1, 0, 0, 0]), part.logged)
    part.write_piece(3, data[3 * PIECE_LENGTH:])  # after the record: only in the log
    part.write_piece(1, data[PIECE_LENGTH:2 * PIECE_LENGTH])
    part.close()
    with (tmp_path / "f.bin.part").open("r+b") as f:  # piece 1 did not reach the disk intact
        f.seek(PIECE_LENGTH)
        f.write(b"\0")
    with (tmp_path / "f.bin.part.log").open("ab") as f:
        f.write(b"\x02\x00")  # a torn entry from the kill
    again = PartFile(tmp_path, meta)
    assert again.open() == bytearray([1, 0, 0, 1])
    assert again.rehashed == 2  # pieces 3 and 1, not piece 0 (the record has it)
    assert again.logged == 12 and (tmp_path / "f.bin.part.log").stat().st_size == 12  # torn entry cut
    again.write_piece(1, data[PIECE_LENGTH:2 * PIECE_LENGTH])
    again.write_piece(2, data[2 * PIECE_LENGTH:3 * PIECE_LENGTH])
    again.close()
    third = PartFile(tmp_path, meta)
    assert third.open() == bytearray([1, 1, 1, 1])  # killed before any record of this run: the log has it
    third.sync()
    third.finish()
    third.close()
    assert not (tmp_path / "f.bin.part.log").exists() and (tmp_path / "f.bin").read_bytes() == data


def test_part_file_unclean_record_rereads_the_whole_part(tmp_path: Path) -> None:
    data = os.urandom(3 * PIECE_LENGTH)
    meta = meta_for(data)
    part = PartFile(tmp_path, meta)
    part.open()
    part.write_piece(0, data[:PIECE_LENGTH])
    part.write_piece(2, data[2 * PIECE_LENGTH:])
    part.close()
    (tmp_path / "f.bin.part.resume").write_bytes(b"{damaged")
    again = PartFile(tmp_path, meta)
    assert again.open() == bytearray([1, 0, 1]) and again.rehashed == 3
    again.close()


# ---------------------------------------------------------------- share index


def test_share_index_skips_symlinks_dirs_hidden_and_caches(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "a.bin").write_bytes(os.urandom(1000))
    (share / ".hidden").write_bytes(b"x")
    (share / "x.part").write_bytes(b"x")
    (share / "sub").mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    (share / "link").symlink_to(secret)
    cache = tmp_path / "cache.json"
    index = ShareIndex(share, cache)
    added, removed = index.rescan()
    assert [f.meta.name for f in added] == ["a.bin"] and removed == []
    hashed: list[str] = []
    again = ShareIndex(share, cache)
    added2, _ = again.rescan(progress=lambda n, d, t: hashed.append(n))
    assert [f.meta for f in added2] == [f.meta for f in added] and hashed == []  # from the cache
    (share / "b.bin").write_bytes(b"new")
    (share / "a.bin").unlink()
    added3, removed3 = again.rescan()
    assert [f.meta.name for f in added3] == ["b.bin"] and removed3 == ["a.bin"]


def test_part_file_disk_full_is_one_clear_error(tmp_path: Path) -> None:
    meta = meta_for(os.urandom(PIECE_LENGTH))
    part = PartFile(tmp_path, meta)
    part.open()
    os.close(part.fd)
    part._fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    with pytest.raises(StorageError, match="disk full"):
        part.write_piece(0, b"x" * 10)
    part.close()


def test_part_file_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        PartFile(tmp_path / "nope", meta_for(b"x")).open()


def test_decoder_hands_out_pieces_as_views_of_the_read() -> None:
    pieces = [os.urandom(1000 + i) for i in range(3)]
    frames = b"".join(wire.encode_piece_header(i, len(p)) + p for i, p in enumerate(pieces))
    dec = wire.Decoder()
    read = frames[:-10]  # the last piece straddles two reads
    out = dec.feed(read)
    assert [bytes(m.data) for m in out] == pieces[:2]
    assert all(isinstance(m.data, memoryview) and m.data.obj is read for m in out)  # views, no copy
    last = dec.feed(frames[-10:])
    assert [m.index for m in last] == [2] and bytes(last[0].data) == pieces[2] and dec.buffered == 0


def test_read_cached_reads_what_read_batch_reads_unless_overridden(tmp_path: Path) -> None:
    from punch_net.torrent.service import TorrentService

    data = os.urandom(3 * PIECE_LENGTH + 5)
    (tmp_path / "f.bin").write_bytes(data)  # just written: in the page cache
    meta = meta_for(data)
    svc = TorrentService()
    want = [bytes(b) for b in svc.read_batch(tmp_path / "f.bin", meta, [0, 1, 3])]
    assert want == [data[:PIECE_LENGTH], data[PIECE_LENGTH:2 * PIECE_LENGTH], data[3 * PIECE_LENGTH:]]
    cached = svc.read_cached(tmp_path / "f.bin", meta, [0, 1, 3])
    assert cached is not None and [bytes(b) for b in cached] == want

    class Corrupting(TorrentService):  # tests serve bad data this way: every read must reach it
        def read_batch(self, path: Path, meta: Metainfo, indexes: list[int]) -> list[bytes]:
            return [b"x" * meta.piece_size(i) for i in indexes]

    assert Corrupting().read_cached(tmp_path / "f.bin", meta, [0]) is None
