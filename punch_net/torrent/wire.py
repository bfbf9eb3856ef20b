"""`/punch/torrent/1.0.0` message codec: pure functions and a byte-fed decoder, no I/O.

Frame: u32 big-endian length L (of what follows), then a type byte and L-1 body bytes.
Every type has a maximum body length; a longer or malformed frame is a ProtocolError
(the adapter resets the stream). See docs/PROTOCOL.md, "Torrent protocol".
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, cast

from punch_net.torrent import PIECE_LENGTH
from punch_net.torrent.metainfo import MAX_METAINFO_BYTES

# client -> server
LIST = 0x01
GET_META = 0x02
INTERESTED = 0x03
REQUEST = 0x04
CANCEL = 0x05
# server -> client
CATALOGUE = 0x81
META = 0x82
BITFIELD = 0x83
PIECE = 0x84
HAVE = 0x85
REJECT = 0x86
ERROR = 0x87
CHOKE = 0x88  # the server will not answer REQUESTs until UNCHOKE; queued ones are dropped
UNCHOKE = 0x89
PEERS = 0x8A  # other downloaders of the torrent: JSON [[peer id, [multiaddr, ...]], ...]

MAX_CATALOGUE = 4 * 1024 * 1024
MAX_ERROR = 1024
MAX_PEERS = 64 * 1024
PEERS_PER_MESSAGE = 50
MAX_BITFIELD = 32 + MAX_METAINFO_BYTES // 32 // 8 + 1

# type -> (min body, max body)
LIMITS: dict[int, tuple[int, int]] = {
    LIST: (0, 0),
    GET_META: (32, 32),
    INTERESTED: (32, 32),
    REQUEST: (4, 4),
    CANCEL: (4, 4),
    CATALOGUE: (0, MAX_CATALOGUE),
    META: (32, 32 + MAX_METAINFO_BYTES),
    BITFIELD: (32, MAX_BITFIELD),
    PIECE: (4, 4 + PIECE_LENGTH),
    HAVE: (4, 4),
    REJECT: (4, 4),
    ERROR: (0, MAX_ERROR),
    CHOKE: (0, 0),
    UNCHOKE: (0, 0),
    PEERS: (2, MAX_PEERS),
}
MAX_FRAME = 1 + max(hi for _, hi in LIMITS.values())
_LEN = struct.Struct(">I")
_LEN_TYPE = struct.Struct(">IB")
_LEN_TYPE_INDEX = struct.Struct(">IBI")


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid message; reset the stream."""


@dataclass(frozen=True, slots=True)
class Message:
    type: int
    info_hash: bytes = b""
    index: int = -1
    data: bytes = b""  # metainfo, bitfield, piece data, catalogue JSON or error text

    def json(self) -> Any:
        return json.loads(self.data)


def frame(mtype: int, body: bytes = b"") -> bytes:
    return _LEN_TYPE.pack(len(body) + 1, mtype) + body


def encode_list() -> bytes:
    return frame(LIST)


def encode_get_meta(info_hash: bytes) -> bytes:
    return frame(GET_META, _hash(info_hash))


def encode_interested(info_hash: bytes) -> bytes:
    return frame(INTERESTED, _hash(info_hash))


def encode_index(mtype: int, index: int) -> bytes:
    """REQUEST, CANCEL, HAVE or REJECT."""
    return _LEN_TYPE_INDEX.pack(5, mtype, index)


def encode_piece_header(index: int, length: int) -> bytes:
    """The 9 bytes before a piece's data; the caller writes header + data in one write."""
    if length > PIECE_LENGTH:
        raise ValueError("piece too long")
    return _LEN_TYPE_INDEX.pack(length + 5, PIECE, index)


def encode_catalogue(entries: list[dict[str, Any]]) -> bytes:
    body = json.dumps(entries, separators=(",", ":")).encode()
    if len(body) > MAX_CATALOGUE:
        raise ValueError("catalogue too large")
    return frame(CATALOGUE, body)


def encode_meta(info_hash: bytes, metainfo: bytes) -> bytes:
    return frame(META, _hash(info_hash) + metainfo)


def encode_bitfield(info_hash: bytes, bits: bytes) -> bytes:
    return frame(BITFIELD, _hash(info_hash) + bits)


def encode_peers(peers: list[tuple[str, list[str]]]) -> bytes:
    """PEERS: up to PEERS_PER_MESSAGE (peer id, addresses) pairs; addresses are cut to fit."""
    entries = [[pid, addrs[:8]] for pid, addrs in peers[:PEERS_PER_MESSAGE]]
    return frame(PEERS, json.dumps(entries, separators=(",", ":")).encode()[:MAX_PEERS])


def decode_peers(data: bytes) -> list[tuple[str, list[str]]]:
    """A PEERS body -> (peer id, addresses) pairs; malformed entries are skipped."""
    try:
        entries = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("peers is not JSON") from None
    if not isinstance(entries, list):
        raise ProtocolError("peers is not a list")
    out = []
    for e in entries[:PEERS_PER_MESSAGE]:
        if (isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], list)
                and all(isinstance(a, str) for a in e[1])):
            out.append((e[0][:128], [a[:256] for a in e[1][:8]]))
    return out


# What a peer answers for a torrent it does not serve (yet: a fellow downloader still
# fetching the metainfo answers this too).
UNKNOWN_TORRENT = "unknown info hash"


def encode_error(text: str) -> bytes:
    return frame(ERROR, text.encode("utf-8")[:MAX_ERROR])


def _hash(info_hash: bytes) -> bytes:
    if len(info_hash) != 32:
        raise ValueError("info hash must be 32 bytes")
    return info_hash


def parse(mtype: int, body: bytes) -> Message:
    """One frame's type and body -> Message, checking the length limits."""
    limits = LIMITS.get(mtype)
    if limits is None:
        raise ProtocolError(f"unknown message type 0x{mtype:02x}")
    lo, hi = limits
    if not lo <= len(body) <= hi:
        raise ProtocolError(f"message 0x{mtype:02x} has a bad length {len(body)}")
    if mtype in (REQUEST, CANCEL, HAVE, REJECT):
        return Message(mtype, index=_LEN.unpack_from(body)[0])
    if mtype == PIECE:
        return Message(mtype, index=_LEN.unpack_from(body)[0], data=body[4:])
    if mtype in (GET_META, INTERESTED):
        return Message(mtype, info_hash=body)
    if mtype in (META, BITFIELD):
        return Message(mtype, info_hash=body[:32], data=body[32:])
    if mtype == CATALOGUE:
        try:
            entries = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError("catalogue is not JSON") from None
        if not isinstance(entries, list):
            raise ProtocolError("catalogue is not a list")
    if mtype == ERROR:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("error text is not UTF-8") from None
    return Message(mtype, data=body)


class Decoder:
    """Feed it bytes as they arrive; get whole messages back."""

    def __init__(self, allowed: frozenset[int] | None = None) -> None:
        self._buf = bytearray()
        self._allowed = allowed

    def feed(self, data: bytes) -> list[Message]:
        """A PIECE's data is a memoryview of `data` (read-only use: hashed, written,
        measured), not a copy; only a frame that straddles two reads is copied once, into
        the decoder's own buffer, which no view ever points into."""
        out: list[Message] = []
        pos = 0
        buf = self._buf
        if buf:  # complete the frame begun by the last read, from the front of this one
            while buf and pos < len(data):
                if len(buf) < 5:
                    take = 5 - len(buf)
                else:
                    length = self._check(*_LEN_TYPE.unpack_from(buf))
                    take = 4 + length - len(buf)
                buf += data[pos:pos + take]
                pos += min(take, len(data) - pos)
                if len(buf) >= 5:
                    length, mtype = _LEN_TYPE.unpack_from(buf)
                    length = self._check(length, mtype)
                    if len(buf) == 4 + length:
                        out.append(self._message(mtype, bytes(buf), 0, length))
                        buf.clear()
            if buf:
                return out
        end = len(data)
        with memoryview(data) as view:
            while end - pos >= 5:
                length, mtype = _LEN_TYPE.unpack_from(data, pos)
                length = self._check(length, mtype)
                if end - pos < 4 + length:
                    break
                out.append(self._message(mtype, view, pos, length))
                pos += 4 + length
            if pos < end:
                buf += view[pos:]
        return out

    def _check(self, length: int, mtype: int) -> int:
        if length < 1 or length > MAX_FRAME:
            raise ProtocolError(f"frame length {length} out of range")
        if self._allowed is not None and mtype not in self._allowed:
            raise ProtocolError(f"unexpected message type 0x{mtype:02x}")
        lo, hi = LIMITS.get(mtype, (0, -1))
        if not lo <= length - 1 <= hi:
            raise ProtocolError(f"message 0x{mtype:02x} has a bad length {length - 1}")
        return length

    @staticmethod
    def _message(mtype: int, src: bytes | memoryview, pos: int, length: int) -> Message:
        if mtype == PIECE:
            index = _LEN.unpack_from(src, pos + 5)[0]
            body = memoryview(src)[pos + 9:pos + 4 + length]
            # bytes-like, not bytes: a view of the read (its bytes object lives as long as
            # the view), saving a 64 KiB copy a piece
            return Message(PIECE, index=index, data=cast("bytes", body))
        return parse(mtype, bytes(src[pos + 5:pos + 4 + length]))

    @property
    def buffered(self) -> int:
        return len(self._buf)


CLIENT_TYPES = frozenset({LIST, GET_META, INTERESTED, REQUEST, CANCEL})
SERVER_TYPES = frozenset({CATALOGUE, META, BITFIELD, PIECE, HAVE, REJECT, ERROR, CHOKE, UNCHOKE, PEERS})


def pack_bits(have: bytearray | list[bool], count: int) -> bytes:
    """Big-endian bit order (piece 0 = high bit of byte 0), spare bits zero."""
    out = bytearray((count + 7) // 8)
    for i in range(count):
        if have[i]:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def unpack_bits(bits: bytes, count: int) -> bytearray:
    """Bitfield bytes -> one 0/1 byte per piece; wrong size or set spare bits -> ProtocolError."""
    if len(bits) != (count + 7) // 8:
        raise ProtocolError(f"bitfield is {len(bits)} bytes for {count} pieces")
    out = bytearray(count)
    for i in range(count):
        if bits[i >> 3] & (0x80 >> (i & 7)):
            out[i] = 1
    if count % 8 and bits[-1] & (0xFF >> (count % 8)):
        raise ProtocolError("bitfield has spare bits set")
    return out
