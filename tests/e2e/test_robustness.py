"""A running `punch` process against hostile or broken peers: silent TCP peers, garbage and
oversize messages on both protocols it serves, stalled Kademlia streams. After each
attack the node must still serve honest peers, print no traceback and stay up."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.id import ID
from punch_harness import (
    PunchFactory,
    PunchProcess,
    SilentPeer,
    kad_find_node,
    libp2p_host,
    open_stalled_streams,
    peer_info_of,
)

from punch_net.messaging import codec
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.p2p.identity import new_identity
from punch_net.p2p.patches.kad_inbound_guard import KAD_STREAMS_PER_PEER
from punch_net.p2p.streams import read_some

pytestmark = pytest.mark.slow
quiet_libp2p_logging()

CMD = codec.PROTOCOL_ID


# ---------------------------------------------------------------- silent peers


def test_silent_bootstrap_peer_fails_fast(punch: PunchFactory, silent_peer: SilentPeer) -> None:
    """Default dial timeout (10 s): both dial paths (with /p2p/ -> host.connect, without ->
    the Noise probe) give up and retry instead of hanging ~120 s."""
    someone = ID.from_pubkey(new_identity().public_key)
    bare = f"/ip4/127.0.0.1/tcp/{silent_peer.port}"
    with_id = punch.start("listener", "--bootstrap", f"{bare}/p2p/{someone}", name="with-id")
    without = punch.start("listener", "--bootstrap", bare, name="without-id")
    for proc in (with_id, without):
        proc.listening()
    for proc in (with_id, without):
        retry = proc.wait_event("bootstrap_retry", 10 + 15)
        took = retry["_t"] - proc.started_at
        assert took < 10 + 8, f"{proc.name}: first retry after {took:.1f}s"
        assert "timed out" in retry["error"], retry
        assert proc.alive()
    assert silent_peer.accepted  # they really reached the silent socket


# ---------------------------------------------------------------- raw streams


async def open_cmd(host: IHost, peer: ID) -> INetStream:
    with trio.fail_after(10):
        return await host.new_stream(peer, [CMD])  # type: ignore[list-item]


async def read_frames(stream: INetStream, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Read `n` response frames (raises on reset/EOF/timeout)."""
    decoder = codec.FrameDecoder()
    out: list[dict[str, Any]] = []
    with trio.fail_after(timeout):
        while len(out) < n:
            data = await read_some(stream)
            if not data:
                raise EOFError(f"stream ended after {len(out)} of {n} frames")
            out += [json.loads(f) for f in decoder.feed(data)]
    return out


async def stream_is_dead(stream: INetStream, timeout: float = 10.0) -> bool:
    """True once the peer reset or closed the stream (what it must do on a framing error)."""
    with trio.move_on_after(timeout):
        try:
            while await read_some(stream):
                pass
        except Exception:
            pass
        return True
    return False


async def honest_ping(host: IHost, peer: ID) -> None:
    stream = await open_cmd(host, peer)
    await stream.write(codec.encode_json({"id": "h1", "command": "ping", "args": {}, "from": "test"}))
    (resp,) = await read_frames(stream, 1)
    assert resp["id"] == "h1" and resp["ok"] and resp["result"]["pong"] is True
    await stream.close()


async def started_server(punch: PunchFactory) -> PunchProcess:
    proc = punch.start("server")
    await proc.aevent("listening")
    return proc


async def test_garbage_and_oversize_on_the_command_protocol(punch: PunchFactory) -> None:
    server = await started_server(punch)
    peer = ID.from_base58(server.peer_id)
    async with libp2p_host() as host:
        with trio.fail_after(10):
            await host.connect(peer_info_of(server.addr))

        # Framing is fine but the content is not: error responses, and the stream lives on.
        stream = await open_cmd(host, peer)
        await stream.write(codec.encode_frame(b"{not json"))
        await stream.write(codec.encode_frame(b"[1, 2, 3]"))
        await stream.write(codec.encode_frame(b'{"command": "ping"}'))
        await stream.write(codec.encode_json({"id": "u", "command": "no-such-command"}))
        await stream.write(codec.encode_frame(b"\xff\xfe invalid utf-8"))
        await stream.write(codec.encode_json({"id": "a", "command": "echo", "args": "not an object"}))
        bad = await read_frames(stream, 6)
        codes = sorted(r["error"]["code"] for r in bad)
        assert all(not r["ok"] for r in bad)
        assert codes == sorted(["bad_json", "bad_request", "bad_request", "unknown_command", "bad_json",
                                "bad_request"]), bad
        await stream.write(codec.encode_json({"id": "ok", "command": "echo", "args": {"x": 1}}))
        (good,) = await read_frames(stream, 1)
        assert good == {"id": "ok", "ok": True, "result": {"x": 1}}

        # 100 pipelined requests in one write are all answered.
        burst = b"".join(codec.encode_json({"id": str(i), "command": "ping"}) for i in range(100))
        await stream.write(burst)
        answers = await read_frames(stream, 100)
        assert sorted(int(r["id"]) for r in answers) == list(range(100))
        await stream.close()

        # Framing errors: the stream is reset, the node is not.
        attacks = [
            codec.encode_uvarint(2 * codec.MAX_FRAME),  # announces 2 MiB
            codec.encode_uvarint(codec.MAX_FRAME + 1) + os.urandom(64 * 1024),  # oversize, with data
            b"\xff" * 11,  # a length prefix that never ends
        ]
        for attack in attacks:
            stream = await open_cmd(host, peer)
            try:
                await stream.write(attack)
            except Exception:
                pass  # the reset may race our write
            assert await stream_is_dead(stream), f"stream not reset after {attack[:12]!r}"

        # A truncated frame, then EOF; and a stream opened and abandoned.
        stream = await open_cmd(host, peer)
        await stream.write(codec.encode_uvarint(1000) + b"{")
        await stream.close()
        idle = await open_cmd(host, peer)

        await honest_ping(host, peer)
        await idle.reset()

    await server.aevent("error", pred=lambda e: "rejected message" in e["message"])
    assert server.alive()
    assert "Traceback" not in server.stderr_text(), server.stderr_text()


async def test_garbage_and_oversize_on_the_kad_protocol(punch: PunchFactory) -> None:
    server = await started_server(punch)
    peer = ID.from_base58(server.peer_id)
    async with libp2p_host() as host:
        with trio.fail_after(10):
            await host.connect(peer_info_of(server.addr))
        attacks = [
            codec.encode_uvarint(64) + os.urandom(64),  # not a protobuf
            codec.encode_uvarint(100 * 1024 * 1024) + b"x" * 1000,  # announces 100 MiB
            b"\xff" * 16,  # endless varint
            codec.encode_uvarint(2) + b"\x08\x04",  # FIND_NODE without a key
        ]
        for attack in attacks:
            with trio.fail_after(10):
                stream = await host.new_stream(peer, [KAD_PROTOCOL])
            try:
                await stream.write(attack)
            except Exception:
                pass
            assert await stream_is_dead(stream, 15), f"kad stream not closed after {attack[:12]!r}"
        with trio.fail_after(15):
            await kad_find_node(host, peer)
        await honest_ping(host, peer)
    assert server.alive()
    assert "Traceback" not in server.stderr_text(), server.stderr_text()


async def test_stalled_kad_streams_do_not_starve_honest_peers(punch: PunchFactory) -> None:
    """One attacker opening 16 silent kad streams is capped at 4; three attackers filling all
    12 slots are cut off by the 10 s read deadline, after which honest peers are served."""
    server = await started_server(punch)
    peer = ID.from_base58(server.peer_id)
    info = peer_info_of(server.addr)
    async with libp2p_host() as honest, libp2p_host() as a1, libp2p_host() as a2, libp2p_host() as a3:
        for h in (honest, a1, a2, a3):
            with trio.fail_after(10):
                await h.connect(info)
        await open_stalled_streams(a1, peer, str(KAD_PROTOCOL), 16)  # beyond 4 they are reset
        start = time.monotonic()
        await kad_find_node(honest, peer, timeout=5)
        assert time.monotonic() - start < 5

        for attacker in (a2, a3):
            await open_stalled_streams(attacker, peer, str(KAD_PROTOCOL), KAD_STREAMS_PER_PEER)
        await trio.sleep(0.5)
        start = time.monotonic()
        served = False
        with trio.move_on_after(10 + 15):
            while not served:
                try:
                    await kad_find_node(honest, peer, timeout=5)
                    served = True
                except Exception:
                    await trio.sleep(0.2)
        assert served, "honest peer starved by stalled kad streams"
        assert time.monotonic() - start < 10 + 15
    assert server.alive()
