"""`/punch/cmd/1.0.0` framing and validation, without sockets."""

from __future__ import annotations

import json

import pytest

from punch_net.messaging import codec


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16383, 16384, 70000])
def test_frame_round_trip_across_varint_widths(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    frame = codec.encode_frame(payload)
    assert len(frame) - size == max(1, (size.bit_length() + 6) // 7)
    assert codec.FrameDecoder().feed(frame) == [payload]


def test_uvarint_known_bytes() -> None:
    assert codec.encode_uvarint(0) == b"\x00"
    assert codec.encode_uvarint(127) == b"\x7f"
    assert codec.encode_uvarint(128) == b"\x80\x01"
    assert codec.encode_uvarint(300) == b"\xac\x02"
    with pytest.raises(ValueError):
        codec.encode_uvarint(-1)


def test_frames_split_across_feeds_byte_by_byte() -> None:
    payloads = [b"{}", b'{"a": 1}', b"x" * 300, b""]
    stream = b"".join(codec.encode_frame(p) for p in payloads)
    dec = codec.FrameDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
    assert got == payloads
    assert dec.pending == 0


def test_many_frames_in_one_feed_and_a_partial_tail() -> None:
    stream = b"".join(codec.encode_json({"id": str(i)}) for i in range(50))
    tail = codec.encode_json({"id": "last"})
    dec = codec.FrameDecoder()
    frames = dec.feed(stream + tail[:-3])
    assert [json.loads(f)["id"] for f in frames] == [str(i) for i in range(50)]
    assert dec.pending == len(tail) - 3  # truncation is visible at EOF
    assert json.loads(dec.feed(tail[-3:])[0]) == {"id": "last"}


def test_oversize_frame_rejected_from_the_header_alone() -> None:
    dec = codec.FrameDecoder(max_frame=100)
    with pytest.raises(codec.ProtocolError, match="exceeds"):
        dec.feed(codec.encode_uvarint(101))
    assert codec.FrameDecoder(max_frame=100).feed(codec.encode_frame(b"x" * 100, 100)) == [b"x" * 100]
    with pytest.raises(ValueError):
        codec.encode_frame(b"x" * 101, max_frame=100)


def test_endless_varint_rejected() -> None:
    with pytest.raises(codec.ProtocolError, match="too long"):
        codec.FrameDecoder().feed(b"\xff" * 11)
    with pytest.raises(codec.ProtocolError):
        dec = codec.FrameDecoder()
        for _ in range(11):
            dec.feed(b"\x80")


def test_parse_request_accepts_the_documented_shape() -> None:
    req = codec.parse_request(b'{"id": "1", "command": "echo", "args": {"a": 1}, "from": "me"}')
    assert req == codec.Request("1", "echo", {"a": 1}, "me")
    assert codec.parse_request(b'{"id": 7, "command": "ping"}') == codec.Request("7", "ping", {}, "")
    assert codec.parse_request(b'{"id": "x", "command": "ping", "args": null}').args == {}
    assert codec.parse_request(json.dumps(req.to_json()).encode()) == req


@pytest.mark.parametrize(
    ("frame", "code", "req_id"),
    [
        (b"{nope", codec.BAD_JSON, ""),
        (b"\xff\xfe", codec.BAD_JSON, ""),
        (b"[1]", codec.BAD_REQUEST, ""),
        (b'"str"', codec.BAD_REQUEST, ""),
        (b'{"command": "ping"}', codec.BAD_REQUEST, ""),
        (b'{"id": true, "command": "ping"}', codec.BAD_REQUEST, ""),
        (b'{"id": [1], "command": "ping"}', codec.BAD_REQUEST, ""),
        (b'{"id": "9"}', codec.BAD_REQUEST, "9"),
        (b'{"id": "9", "command": ""}', codec.BAD_REQUEST, "9"),
        (b'{"id": "9", "command": 5}', codec.BAD_REQUEST, "9"),
        (b'{"id": "9", "command": "x", "args": [1]}', codec.BAD_REQUEST, "9"),
        (b'{"id": "9", "command": "x", "from": 3}', codec.BAD_REQUEST, "9"),
    ],
)
def test_parse_request_rejects(frame: bytes, code: str, req_id: str) -> None:
    with pytest.raises(codec.BadMessage) as info:
        codec.parse_request(frame)
    assert info.value.code == code
    assert info.value.req_id == req_id


def test_response_round_trip() -> None:
    ok = codec.Response("1", True, {"pong": True})
    assert codec.parse_response(codec.encode_json(ok.to_json())[1:]) == ok
    err = codec.Response.failure("2", codec.UNKNOWN_COMMAND, "no such command")
    assert err.to_json() == {"id": "2", "ok": False, "error": {"code": "unknown_command",
                                                               "message": "no such command"}}
    assert codec.parse_response(json.dumps(err.to_json()).encode()) == err


@pytest.mark.parametrize("frame", [b'{"ok": true}', b'{"id": "1", "ok": "yes"}', b'{"id": "1", "ok": false}',
                                   b"[]", b"nope"])
def test_parse_response_rejects(frame: bytes) -> None:
    with pytest.raises(codec.BadMessage):
        codec.parse_response(frame)


def test_compact_encoding() -> None:
    frame = codec.encode_json({"id": "1", "command": "ping"})
    assert frame[1:] == b'{"id":"1","command":"ping"}'
    assert frame[0] == len(frame) - 1
