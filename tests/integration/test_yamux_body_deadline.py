"""The DATA body deadline of punch_net/p2p/patches/yamux_fast_data.py, on a real connection.

py-libp2p reads an announced DATA frame body under `trio.fail_after(PY_YAMUX_DATA_READ_TIMEOUT)`
and closes the connection when it does not come. The fast path reads DATA bodies itself, in one
cancel scope whose deadline is set around each body read and lifted for headers; these tests
show it kept both halves: a peer that stalls mid-body is cut off at the deadline, and a body
that comes in pieces within it, followed by a long silence between frames, is not.

Two in-process hosts on 127.0.0.1; the peer writes raw yamux frames through its own Noise
session, holding its yamux write lock so that none of its own frames (pings, window
updates) land inside the frame under test. Every wait is bounded.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.stream_muxer.yamux.yamux import TYPE_DATA, YAMUX_HEADER_FORMAT, Yamux
from punch_harness import host_addr, libp2p_host, peer_info_of

from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.p2p.patches import yamux_fast_data

quiet_libp2p_logging()

SINK = "/punch/test-sink/1"
WAIT = 30.0  # bound of every network wait (generous: the machine is shared)


def data_frame_header(stream_id: int, length: int) -> bytes:
    return struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, stream_id, length)


class Sink:
    """The receiving side's handler: keeps what arrives on the stream, and notes its end."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.more = trio.Event()
        self.ended = trio.Event()

    async def handle(self, stream: INetStream) -> None:
        try:
            while data := await stream.read(1 << 16):
                self.received += data
                self.more.set()
        except Exception:  # a reset or the connection's end: what the stall test waits for
            pass
        finally:
            self.ended.set()

    async def wait_for(self, total: int) -> None:
        with trio.fail_after(WAIT):
            while len(self.received) < total:
                self.more = trio.Event()
                await self.more.wait()


def yamux_of(host: IHost, peer: IHost) -> Yamux:
    conn: Any = host.get_network().get_connections(peer.get_id())[0]  # type: ignore[attr-defined]
    mux = conn.muxed_conn
    assert isinstance(mux, Yamux)
    return mux


@asynccontextmanager
async def sink_connection(deadline: float, monkeypatch: pytest.MonkeyPatch
                          ) -> AsyncIterator[tuple[Sink, Yamux, Yamux, int]]:
    """(sink, receiver's Yamux, sender's Yamux, stream id): an open stream whose receiver
    reads DATA frames on the fast path, with a body deadline of `deadline` seconds."""
    # the patch reads the deadline once per connection, when its first DATA frame comes
    monkeypatch.setenv("PY_YAMUX_DATA_READ_TIMEOUT", str(deadline))
    sink = Sink()
    async with libp2p_host() as receiver, libp2p_host() as sender:
        receiver.set_stream_handler(SINK, sink.handle)  # type: ignore[arg-type]
        with trio.fail_after(WAIT):
            await sender.connect(peer_info_of(host_addr(receiver)))
            stream = await sender.new_stream(receiver.get_id(), [SINK])  # type: ignore[list-item]
            fast_before = yamux_fast_data.counts["fast_data_frames"]
            await stream.write(b"open")
        await sink.wait_for(4)  # the stream is open at the receiver, its reader on the fast path
        assert yamux_fast_data.counts["fast_data_frames"] > fast_before
        stream_id = stream.muxed_stream.stream_id  # type: ignore[attr-defined]
        receiver_mux, sender_mux = yamux_of(receiver, sender), yamux_of(sender, receiver)
        # Both sides' first RTT pings (0.5 s after the start, then every 30 s) done: from here
        # on nothing but the test's frames comes in, so the fast loop does not return (a
        # non-DATA frame would end it, and the next read would start a fresh scope)
        with trio.fail_after(WAIT):
            while not (receiver_mux.rtt() and sender_mux.rtt()):
                await trio.sleep(0.05)
        yield sink, receiver_mux, sender_mux, stream_id


async def test_a_body_stalled_mid_frame_closes_the_connection_at_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    deadline = 1.5
    async with sink_connection(deadline, monkeypatch) as (sink, receiver_mux, sender_mux, stream_id):
        async with sender_mux._write_lock:  # held: nothing else of the sender's goes out meanwhile
            await sender_mux.secured_conn.write(data_frame_header(stream_id, 1000) + b"x" * 400)
            sent = trio.current_time()
            with trio.fail_after(deadline + WAIT):
                await receiver_mux.event_shutting_down.wait()
            took = trio.current_time() - sent
            # the deadline starts when the header is read, after it was sent: never earlier
            assert took >= deadline - 0.05, f"closed after {took:.2f}s, before the {deadline}s deadline"
            with trio.fail_after(WAIT):
                await sink.ended.wait()  # the stream's reader learns of it
        assert sink.received == b"open"  # the partial body was never handed to the stream


async def test_a_body_in_pieces_within_the_deadline_and_silence_between_frames_are_fine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    deadline = 3.0
    async with sink_connection(deadline, monkeypatch) as (sink, receiver_mux, sender_mux, stream_id):
        body = bytes(range(256)) * 8
        pieces = [body[i:i + 512] for i in range(0, len(body), 512)]
        async with sender_mux._write_lock:
            started = trio.current_time()
            await sender_mux.secured_conn.write(data_frame_header(stream_id, len(body)))
            for piece in pieces:
                await trio.sleep(deadline / 12)  # the body trickles in: ~1/3 of the deadline in all
                await sender_mux.secured_conn.write(piece)
            trickled = trio.current_time() - started
        if trickled >= deadline * 0.9:
            pytest.skip(f"the machine stretched {deadline / 3:.1f}s of sleeps to {trickled:.1f}s")
        await sink.wait_for(4 + len(body))
        # then silence, longer than the deadline: a header may be waited for as long as it takes
        await trio.sleep(deadline * 1.5)
        assert not receiver_mux.event_shutting_down.is_set(), "closed while waiting for a header"
        async with sender_mux._write_lock:
            await sender_mux.secured_conn.write(data_frame_header(stream_id, 5) + b"after")
        await sink.wait_for(4 + len(body) + 5)
        assert bytes(sink.received) == b"open" + body + b"after"
        assert not receiver_mux.event_shutting_down.is_set() and not sink.ended.is_set()
