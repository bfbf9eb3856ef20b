"""Metainfo: what a shared file is (name, length, piece hashes) and its info hash.

Canonical encoding (documented in docs/PROTOCOL.md, "Torrent protocol"): exactly one
byte string per metainfo, so the info hash (SHA-256 of those bytes) names the content
and the name unambiguously. Decoding refuses anything that is not canonical.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from punch_net.torrent import PIECE_LENGTH
from punch_net.torrent.names import UnsafeName, check_name

MAGIC = b"PUNCHTORRENT\x00\x01"  # 14 bytes: format name + version 1
MAX_LENGTH = 1 << 44  # 16 TiB: 268 M pieces would not fit a metainfo message anyway
MAX_METAINFO_BYTES = 16 * 1024 * 1024 + 512  # 16 MiB of hashes = 32 GiB file
_HEAD = struct.Struct(">QII")  # length, piece_length, piece count
READ_CHUNK = 4 * 1024 * 1024


class MetainfoError(ValueError):
    """Bytes that are not a valid canonical metainfo."""


@dataclass(frozen=True)
class Metainfo:
    name: str
    length: int
    piece_length: int
    pieces: tuple[bytes, ...]  # SHA-256 of each piece

    def __post_init__(self) -> None:
        if self.piece_length <= 0:
            raise MetainfoError("piece length must be positive")
        if not 0 <= self.length <= MAX_LENGTH:
            raise MetainfoError("length out of range")
        if len(self.pieces) != piece_count(self.length, self.piece_length):
            raise MetainfoError(
                f"{len(self.pieces)} piece hashes for {self.length} bytes "
                f"(expected {piece_count(self.length, self.piece_length)})")
        if any(len(p) != 32 for p in self.pieces):
            raise MetainfoError("a piece hash is not 32 bytes")

    @property
    def num_pieces(self) -> int:
        return len(self.pieces)

    def piece_size(self, index: int) -> int:
        if not 0 <= index < self.num_pieces:
            raise IndexError(index)
        start = index * self.piece_length
        return min(self.piece_length, self.length - start)

    def encode(self) -> bytes:
        name = self.name.encode("utf-8")
        return b"".join([
            MAGIC,
            struct.pack(">H", len(name)),
            name,
            _HEAD.pack(self.length, self.piece_length, len(self.pieces)),
            *self.pieces,
        ])

    @functools.cached_property
    def info_hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @functools.cached_property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()

    def verify_piece(self, index: int, data: bytes) -> bool:
        return len(data) == self.piece_size(index) and hashlib.sha256(data).digest() == self.pieces[index]


def piece_count(length: int, piece_length: int = PIECE_LENGTH) -> int:
    """Pieces of a file; an empty file has none (its whole content is its name and length)."""
    return (length + piece_length - 1) // piece_length


def decode(data: bytes) -> Metainfo:
    """Parse canonical metainfo bytes; the name must be safe to use as a file name."""
    if len(data) > MAX_METAINFO_BYTES:
        raise MetainfoError("metainfo too large")
    if not data.startswith(MAGIC):
        raise MetainfoError("not a Punch metainfo (bad magic/version)")
    pos = len(MAGIC)
    if len(data) < pos + 2:
        raise MetainfoError("truncated metainfo")
    (name_len,) = struct.unpack_from(">H", data, pos)
    pos += 2
    raw_name = data[pos:pos + name_len]
    if len(raw_name) != name_len:
        raise MetainfoError("truncated metainfo name")
    pos += name_len
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise MetainfoError("metainfo name is not UTF-8") from None
    try:
        check_name(name)
    except UnsafeName as exc:
        raise MetainfoError(f"refused metainfo: {exc}") from None
    if len(data) < pos + _HEAD.size:
        raise MetainfoError("truncated metainfo header")
    length, piece_length, count = _HEAD.unpack_from(data, pos)
    pos += _HEAD.size
    if piece_length != PIECE_LENGTH:
        raise MetainfoError(f"unsupported piece length {piece_length}")
    if count != piece_count(length, piece_length):
        raise MetainfoError("piece count does not match the length")
    if len(data) != pos + 32 * count:
        raise MetainfoError("metainfo has the wrong number of hash bytes")
    pieces = tuple(data[pos + 32 * i: pos + 32 * (i + 1)] for i in range(count))
    return Metainfo(name, length, piece_length, pieces)


def parse_info_hash(text: str) -> bytes:
    """64 hex digits -> 32 bytes; ValueError with one line otherwise."""
    text = text.strip().lower()
    if len(text) != 64:
        raise ValueError(f"info hash must be 64 hex digits, got {len(text)} characters")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError("info hash must be hexadecimal") from None


def hash_file(path: Path, name: str | None = None, progress: Callable[[int, int], None] | None = None,
              piece_length: int = PIECE_LENGTH) -> Metainfo:
    """Hash a file piece by piece (blocking: run it in a thread). `progress(done, total)`
    is called every few MiB. Raises OSError; the file must not change meanwhile."""
    pieces: list[bytes] = []
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        total = os.fstat(fd).st_size
        done = 0
        pending = b""
        while True:
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                break
            buf = pending + chunk if pending else chunk
            usable = len(buf) - len(buf) % piece_length
            view = memoryview(buf)
            for off in range(0, usable, piece_length):
                pieces.append(hashlib.sha256(view[off:off + piece_length]).digest())
            pending = bytes(view[usable:])
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        if pending:
            pieces.append(hashlib.sha256(pending).digest())
    finally:
        os.close(fd)
    if done != total:
        raise OSError(f"{path} changed while it was hashed")
    return Metainfo(name if name is not None else path.name, done, piece_length, tuple(pieces))
