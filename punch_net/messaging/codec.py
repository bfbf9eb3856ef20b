"""Pure framing and validation for `/punch/cmd/1.0.0` (no I/O, as h11 does).

A stream carries frames: an unsigned LEB128 varint length, then that many bytes of
UTF-8 JSON. Requests and responses are JSON objects; see docs/PROTOCOL.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_ID = "/punch/cmd/1.0.0"
MAX_FRAME = 1024 * 1024  # 1 MiB: larger frames are a protocol error
MAX_VARINT_BYTES = 10

# Error codes carried in responses (JSON-RPC-like numbers would also do; strings read better).
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
UNKNOWN_COMMAND = "unknown_command"
TOO_LARGE = "too_large"
HANDLER_ERROR = "handler_error"
TIMEOUT = "timeout"
BUSY = "busy"


class ProtocolError(Exception):
    """The peer broke framing; the stream must be reset."""


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative length")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_frame(payload: bytes, max_frame: int = MAX_FRAME) -> bytes:
    if len(payload) > max_frame:
        raise ValueError(f"frame of {len(payload)} bytes exceeds the {max_frame} byte limit")
    return encode_uvarint(len(payload)) + payload


# json.dumps with any option builds a new encoder per call; frames are encoded per request
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def encode_json(obj: dict[str, Any], max_frame: int = MAX_FRAME) -> bytes:
    return encode_frame(_COMPACT.encode(obj).encode(), max_frame)


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON, as `encode_json` writes it (ASCII: every other
    character is escaped, so characters are bytes). Raises TypeError/ValueError if not JSON."""
    return len(_COMPACT.encode(value))


class FrameDecoder:
    """Feed bytes in, take whole frames out. Raises ProtocolError on oversize frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        # One pass with an offset and one trim at the end (not a trim per frame): a read
        # carries many pipelined frames.
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos, end = 0, len(buf)
        while pos < end:
            length = buf[pos]
            header = 1
            if length & 0x80:
                length, shift = length & 0x7F, 7
                while True:
                    if pos + header >= end:
                        length = -1  # the prefix is not all here yet
                        break
                    if header >= MAX_VARINT_BYTES:
                        raise ProtocolError("length prefix too long")
                    byte = buf[pos + header]
                    header += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                if length < 0:
                    break
            if length > self.max_frame:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self.max_frame} byte limit")
            if pos + header + length > end:
                break
            frames.append(bytes(buf[pos + header : pos + header + length]))
            pos += header + length
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a frame (non-zero at EOF means truncation)."""
        return len(self._buf)


@dataclass
class Request:
    id: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    sender: str = ""
    size: int = field(default=0, compare=False)  # bytes of the frame it came in (0: built here)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command, "args": self.args, "from": self.sender}


@dataclass
class Response:
    id: str
    ok: bool
    result: Any = None
    error_code: str = ""
    error_message: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.ok:
            return {"id": self.id, "ok": True, "result": self.result}
        return {
            "id": self.id,
            "ok": False,
            "error": {"code": self.error_code, "message": self.error_message},
        }

    @classmethod
    def failure(cls, req_id: str, code: str, message: str) -> Response:
        return cls(id=req_id, ok=False, error_code=code, error_message=message)


class BadMessage(Exception):
    """A frame that is valid framing but not a valid request/response."""

    def __init__(self, code: str, message: str, req_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.req_id = req_id


def _loads_object(frame: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage(BAD_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadMessage(BAD_REQUEST, "message must be a JSON object")
    return obj


def parse_request(frame: bytes) -> Request:
    obj = _loads_object(frame)
    req_id = obj.get("id")
    if not isinstance(req_id, str | int) or isinstance(req_id, bool):
        raise BadMessage(BAD_REQUEST, "'id' must be a string or integer")
    req_id = str(req_id)
    command = obj.get("command")
    if not isinstance(command, str) or not command:
        raise BadMessage(BAD_REQUEST, "'command' must be a non-empty string", req_id)
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadMessage(BAD_REQUEST, "'args' must be an object", req_id)
    sender = obj.get("from", "")
    if not isinstance(sender, str):
        raise BadMessage(BAD_REQUEST, "'from' must be a string", req_id)
    return Request(id=req_id, command=command, args=args, sender=sender, size=len(frame))


def parse_response(frame: bytes) -> Response:
    obj = _loads_object(frame)
    req_id = obj.get("id")
    ok = obj.get("ok")
    if not isinstance(req_id, str) or not isinstance(ok, bool):
        raise BadMessage(BAD_REQUEST, "response needs a string 'id' and a boolean 'ok'")
    if ok:
        return Response(id=req_id, ok=True, result=obj.get("result"))
    err = obj.get("error")
    if not isinstance(err, dict):
        raise BadMessage(BAD_REQUEST, "failed response needs an 'error' object", req_id)
    return Response.failure(req_id, str(err.get("code", "")), str(err.get("message", "")))
