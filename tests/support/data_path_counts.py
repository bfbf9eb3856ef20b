"""Count the Noise/yamux data-path work for one large stream write between two hosts.

Shows the bugs behind punch_net/p2p/patches/noise_batching.py, yamux_batched_write.py and
yamux_fast_data.py by counts the bugs determine, not by time. Run as a script it measures
plain py-libp2p (no Punch patch installed in that process: they are process-wide) and
prints the counts as one JSON line; tests/integration/test_patches.py imports `measure`
and runs it again on patched hosts in the test process.

Every counter wraps one connection's own objects (instance attributes), except yamux's
module-level `read_exactly`, which is wrapped for the measurement and restored after it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio

STREAM_PROTOCOL = "/punch/test-sink/1"
PAYLOAD = 4 * 1024 * 1024  # one stream.write of this many bytes
WINDOW = 16 * 1024 * 1024  # receive window granted up front, so the sender never waits for credit
HEADER = struct.Struct(">BBHII")  # yamux header: version, type, flags, stream id, length
TYPE_DATA = 0


def plain_libp2p() -> bool:
    """True when none of the three patches is installed in this process."""
    from libp2p.security.noise.io import NoiseTransportReadWriter
    from libp2p.stream_muxer.yamux import yamux

    return (NoiseTransportReadWriter.read_msg.__module__ == "libp2p.security.noise.io"
            and yamux.YamuxStream.write.__module__ == yamux.__name__
            and yamux.Yamux.handle_incoming.__module__ == yamux.__name__
            and yamux.read_exactly.__module__ == "libp2p.io.utils")


def layers(host: Any, peer: Any) -> tuple[Any, Any, Any, Any]:
    """The one connection from `host` to `peer`: (Yamux, SecureSession, Noise reader/writer, raw connection)."""
    conns = host.get_network().get_connections(peer)
    assert len(conns) == 1, f"expected one connection, got {len(conns)}"
    muxed = conns[0].muxed_conn
    secured = muxed.secured_conn
    noise = secured.conn
    return muxed, secured, noise, noise.read_writer.read_write_closer


def count_calls(counts: dict[str, int], key: str, obj: Any, name: str,
                before: Callable[..., None] | None = None) -> None:
    """Shadow the bound method obj.name with an instance attribute that counts the calls
    it completes (so a call already under way when counting starts is not counted, and
    each counted call's inner calls are); `before(*args)` sees each call's arguments."""
    inner = getattr(obj, name)
    counts[key] = 0

    if name == "encrypt_with_ad":  # the only sync one
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            result = inner(*args, **kwargs)
            counts[key] += 1
            return result

        setattr(obj, name, sync_wrapper)
        return

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args, **kwargs)
        result = await inner(*args, **kwargs)
        counts[key] += 1
        return result

    setattr(obj, name, wrapper)


async def measure(sender: Any, receiver: Any, grow: Callable[[Any, int], Awaitable[Any]],
                  size: int = PAYLOAD) -> dict[str, int]:
    """`sender` opens a stream to `receiver` (not yet connected) and writes `size` bytes
    in one `stream.write`; the receiver reads them all. Returns what was counted during
    that write (calls are counted as they complete):

    - sender, yamux: `yamux_writes` (`Yamux._write_frame` calls), `yamux_data_writes` (those
      that carry DATA), `data_frames` (DATA frames in them);
    - sender, Noise: `large_noise_writes` (`write_msg` calls for more than one Noise
      message's plaintext, i.e. each of the yamux writes above), the Noise messages they
      were cut into (`large_write_messages`) and the raw sends they took (`large_write_sends`);
    - receiver: `noise_messages_received` (Noise `read_msg` calls), `raw_reads` (reads of
      the raw connection), `read_exactly_calls` (calls of yamux's `read_exactly` on it).

    `grow(stream, n)` opens the receiving stream's window to n (as yamux_window does), so
    the sender never waits for credit."""
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
    from libp2p.stream_muxer.yamux import yamux

    got = 0
    done = trio.Event()
    granted = trio.Event()

    async def sink(stream: Any) -> None:
        nonlocal got
        await grow(stream, WINDOW)
        granted.set()
        while got < 1 + size:  # the opening byte, then the payload
            data = await stream.read(1 << 20)
            if not data:
                break
            got += len(data)
        done.set()

    receiver.set_stream_handler(STREAM_PROTOCOL, sink)
    with trio.fail_after(20):
        await sender.connect(info_from_p2p_addr(receiver.get_addrs()[0]))
        stream = await sender.new_stream(receiver.get_id(), [STREAM_PROTOCOL])
        await stream.write(b"x")  # the handler runs once the stream's first data arrives
        await granted.wait()
        while stream.muxed_stream.send_window < size:  # the WINDOW_UPDATE has landed
            await trio.sleep(0.01)
    muxed_out, _, noise_out, raw_out = layers(sender, receiver.get_id())
    _, secured_in, noise_in, raw_in = layers(receiver, sender.get_id())
    counts: dict[str, int] = {"yamux_data_writes": 0, "data_frames": 0, "large_noise_writes": 0,
                              "large_write_messages": 0, "large_write_sends": 0, "read_exactly_calls": 0}

    def data_frames(data: bytes) -> None:
        """A yamux write of the sender: does it carry DATA payload, in how many frames."""
        frames, off = 0, 0
        while off + HEADER.size <= len(data):
            _, typ, _, _, length = HEADER.unpack_from(data, off)
            off += HEADER.size
            if typ == TYPE_DATA and length:
                frames += 1
                off += length
        counts["data_frames"] += frames
        counts["yamux_data_writes"] += frames > 0

    count_calls(counts, "yamux_writes", muxed_out, "_write_frame", before=data_frames)
    # the cipher itself: Punch's Noise writer encrypts without noise's encrypt() (which wants bytes)
    cipher_out = noise_out.noise_state.noise_protocol.cipher_state_encrypt
    count_calls(counts, "noise_messages_sent", cipher_out, "encrypt_with_ad")
    count_calls(counts, "raw_writes", raw_out, "write")
    count_calls(counts, "noise_messages_received", noise_in, "read_msg")
    count_calls(counts, "raw_reads", raw_in, "read")
    fills = noise_in.__dict__.get("_punch_rbuf")  # Punch's Noise reader: recv_into its own buffer
    if fills is not None:
        count_calls(counts, "socket_fills", fills, "fill")
    write_msg = noise_out.write_msg

    async def large_write_msg(msg: bytes, prefix_encoded: bool = False) -> None:
        """yamux writes one at a time (its write lock), so the deltas are this write's."""
        if len(msg) <= MAX_PLAINTEXT_LENGTH:
            return await write_msg(msg, prefix_encoded)
        messages, sends = counts["noise_messages_sent"], counts["raw_writes"]
        await write_msg(msg, prefix_encoded)
        counts["large_noise_writes"] += 1
        counts["large_write_messages"] += counts["noise_messages_sent"] - messages
        counts["large_write_sends"] += counts["raw_writes"] - sends

    noise_out.write_msg = large_write_msg
    read_exactly = yamux.read_exactly

    async def counting_read_exactly(reader: Any, n: int, *args: Any, **kwargs: Any) -> bytes:
        result: bytes = await read_exactly(reader, n, *args, **kwargs)
        if reader is secured_in:
            counts["read_exactly_calls"] += 1
        return result

    yamux.read_exactly = counting_read_exactly
    try:
        with trio.fail_after(30):
            await stream.write(os.urandom(size))
            await done.wait()
        counted = dict(counts)  # calls still under way (the next read) complete later
    finally:
        yamux.read_exactly = read_exactly
        for obj in (muxed_out, noise_out, raw_out, noise_in, raw_in):  # back to the class methods
            for name in ("_write_frame", "encrypt", "write_msg", "write", "read_msg", "read"):
                obj.__dict__.pop(name, None)
        if fills is not None:
            fills.__dict__.pop("fill", None)
        cipher_out.__dict__.pop("encrypt_with_ad", None)
    # a recv of the socket either way: through the raw connection or into the Noise buffer
    counted["raw_reads"] += counted.pop("socket_fills", 0)
    assert got == 1 + size, f"received {got - 1} of {size} bytes"
    counted["payload"] = size
    await stream.close()
    return counted


async def grow_window(stream: Any, size: int) -> None:
    """As punch_net.p2p.patches.yamux_window.grow_receive_window, on py-libp2p's API alone."""
    muxed = stream.muxed_stream
    async with muxed.window_lock:
        delta = size - muxed.target_recv_window
        muxed.target_recv_window = size
        muxed.recv_window += delta
    await muxed.send_window_update(delta, skip_lock=True)


async def main() -> None:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair

    assert plain_libp2p(), "a Punch patch is installed in the plain py-libp2p process"
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    a = new_host(key_pair=create_new_key_pair())
    b = new_host(key_pair=create_new_key_pair())
    async with a.run(listen), b.run(listen):
        counts = await measure(a, b, grow_window)
        print(json.dumps(counts), flush=True)
        with trio.move_on_after(5):
            await a.close()
            await b.close()


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)
    trio.run(main)
