"""Control-socket line protocol and crawler wire helpers, without sockets."""

from __future__ import annotations

import random

import pytest
from libp2p.peer.id import ID

from punch_net.dht.crawler import NetworkMap, cpl, decode_closer_peers, encode_find_node, kad_key, keys_for_buckets
from punch_net.ops.control import ControlError, LineBuffer, encode, parse_request
from punch_net.ops.metrics import handle_http


def test_line_buffer_splits_and_refuses_long_lines() -> None:
    buf = LineBuffer(limit=10)
    assert buf.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert buf.feed(b":2}\n\n") == [b'{"b":2}']
    assert buf.feed(b"x" * 25) == [None]  # reported once...
    assert buf.feed(b"y" * 25) == []
    assert buf.feed(b"tail\n" + b'{"c":3}\n') == [b'{"c":3}']  # ...and skipped to its end


@pytest.mark.parametrize("line,code", [
    (b"nope", "bad_request"), (b"[1]", "bad_request"), (b'{"id": 1}', "bad_request"),
    (b'{"op": "x", "args": []}', "bad_request"), (b"\xff\xfe", "bad_request"),
])
def test_bad_requests_are_rejected(line: bytes, code: str) -> None:
    with pytest.raises(ControlError) as info:
        parse_request(line)
    assert info.value.code == code


def test_request_round_trip() -> None:
    req_id, op, args = parse_request(encode({"id": 3, "op": "ping", "args": {"peer": "x"}}).strip())
    assert (req_id, op, args) == (3, "ping", {"peer": "x"})
    assert encode({"b": b"\x01", "s": {2, 1}}) == b'{"b":"01","s":[1,2]}\n'


def test_bucket_keys_have_the_asked_prefix_length() -> None:
    peer = ID.from_base58("12D3KooWQ33oybJiFMsezFu6uHgmbFFa5hHo8qDAKMhfpNtwDPHY")
    keys = keys_for_buckets(peer.to_bytes(), max_cpl=10, rng=random.Random(3))
    assert sorted(keys) == list(range(11))
    for want, key in keys.items():
        assert key[:2] == b"\x12\x20" and len(key) == 34  # a sha2-256 multihash: servers accept it
        assert cpl(kad_key(key), kad_key(peer.to_bytes())) == want


def test_find_node_codec() -> None:
    from libp2p.kad_dht.pb.kademlia_pb2 import Message

    frame = encode_find_node(b"\x12\x20" + bytes(32))
    assert frame[0] == len(frame) - 1
    peer = ID.from_base58("12D3KooWQ33oybJiFMsezFu6uHgmbFFa5hHo8qDAKMhfpNtwDPHY")
    msg = Message()
    msg.type = Message.MessageType.FIND_NODE
    p = msg.closerPeers.add()
    p.id = peer.to_bytes()
    import multiaddr

    p.addrs.append(multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001").to_bytes())
    p.addrs.append(b"\x99garbage")
    junk = msg.closerPeers.add()
    junk.id = b"\x00"
    got = decode_closer_peers(msg.SerializeToString())
    assert len(got) >= 1 and got[0][0] == peer and [str(a) for a in got[0][1]] == ["/ip4/127.0.0.1/tcp/4001"]


def test_network_map_ignores_self_and_merges_addresses() -> None:
    m = NetworkMap("me")
    assert m.seen("me") is None
    m.seen("a", ["/ip4/1.2.3.4/tcp/1"])
    m.seen("a", ["/ip4/1.2.3.4/tcp/1", "/ip4/5.6.7.8/tcp/2"], via="b")
    snap = m.snapshot()
    assert snap["known"] == 1 and snap["peers"][0]["addrs"] == ["/ip4/1.2.3.4/tcp/1", "/ip4/5.6.7.8/tcp/2"]


def test_metrics_http_answers() -> None:
    class FakeMetrics:
        def render(self) -> bytes:
            return b"x 1\n"

    ok = handle_http(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", FakeMetrics())  # type: ignore[arg-type]
    assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"\r\n\r\nx 1\n")
    assert handle_http(b"GET /nope HTTP/1.1\r\n\r\n", FakeMetrics()).startswith(b"HTTP/1.1 404")  # type: ignore[arg-type]
    assert handle_http(b"POST /metrics HTTP/1.1\r\n\r\n", FakeMetrics()).startswith(b"HTTP/1.1 405")  # type: ignore[arg-type]
    assert handle_http(b"garbage\r\n\r\n", FakeMetrics()).startswith(b"HTTP/1.1 400")  # type: ignore[arg-type]
