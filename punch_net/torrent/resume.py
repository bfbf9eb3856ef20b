"""The resume record kept beside NAME.part: which pieces are verified on disk.

Written atomically after the .part data it describes has been fsynced, so after a crash
it never claims a piece that is not on disk. `log` is how many bytes of NAME.part.log
(4-byte piece indexes appended as each verified piece is written, storage.PartFile) it
covers: entries past it are pieces written since, re-hashed from disk on resume.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.wire import ProtocolError, pack_bits, unpack_bits

VERSION = 1
MAX_RECORD = 64 * 1024 * 1024


class ResumeError(ValueError):
    """A resume record that is unreadable or belongs to another torrent."""


@dataclass
class ResumeRecord:
    info_hash: str
    have: bytearray  # one 0/1 byte per piece
    log: int = 0  # bytes of NAME.part.log this record covers

    def encode(self) -> bytes:
        bits = pack_bits(self.have, len(self.have))
        return json.dumps({
            "version": VERSION,
            "info_hash": self.info_hash,
            "pieces": len(self.have),
            "have": base64.b64encode(bits).decode(),
            "log": self.log,
        }, separators=(",", ":")).encode()


def decode_record(data: bytes, meta: Metainfo) -> ResumeRecord:
    if len(data) > MAX_RECORD:
        raise ResumeError("resume record too large")
    try:
        obj = json.loads(data)
        if obj.get("version") != VERSION:
            raise ResumeError(f"resume record version {obj.get('version')!r} unsupported")
        if obj.get("info_hash") != meta.info_hash_hex:
            raise ResumeError("resume record belongs to another torrent")
        if obj.get("pieces") != meta.num_pieces:
            raise ResumeError("resume record has the wrong piece count")
        bits = base64.b64decode(obj["have"], validate=True)
        have = unpack_bits(bits, meta.num_pieces)
        log = obj.get("log", 0)
        if not isinstance(log, int) or log < 0:
            raise ResumeError("resume record has a bad log offset")
    except ResumeError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, ProtocolError) as exc:
        raise ResumeError(f"resume record is damaged: {exc}") from None
    return ResumeRecord(meta.info_hash_hex, have, log)
