"""punch_net.p2p.fastpath: the faster Noise/yamux data path keeps every byte and the wire
format — between two patched hosts, and with a plain py-libp2p host in another process;
the node's traffic counters; and the host's Noise-only security."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any

import pytest
import trio
from libp2p.security.noise.io import NoiseTransportReadWriter
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream
from punch_harness import die_with_parent, host_addr, libp2p_host, peer_info_of

from punch_net.p2p import fastpath
from punch_net.p2p.workarounds import quiet_libp2p_logging

quiet_libp2p_logging()

ECHO = "/punch/test-echo/1"
# sizes around the Noise (65,519-byte plaintext) and yamux (64 KiB + 12-byte header) limits
SIZES = [1, 12, 65_518, 65_519, 65_520, 65_548, 200_003, 3 * 1024 * 1024 + 7]

# One echo handler, run in this process and in the plain py-libp2p peer process below.
ECHO_SOURCE = r"""
async def echo(stream):
    # send back what arrives until the other side closes its half
    try:
        while True:
            data = await stream.read(1 << 16)
            if not data:
                break
            await stream.write(data)
    except Exception:  # EOF (py-libp2p raises StreamEOF) or a reset: done
        pass
    await stream.close()
"""
_echo_namespace: dict[str, Any] = {}
exec(ECHO_SOURCE, _echo_namespace)
echo = _echo_namespace["echo"]

PLAIN_ECHO_PEER = r"""
import sys, trio, multiaddr
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
""" + ECHO_SOURCE + r"""
async def main():
    host = new_host(key_pair=create_new_key_pair())
    host.set_stream_handler("/punch/test-echo/1", echo)
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        print(host.get_addrs()[0], flush=True)
        await trio.sleep(120)

trio.run(main)
"""


async def round_trip(host, peer, payload: bytes) -> bytes:  # type: ignore[no-untyped-def]
    """Send `payload` on a fresh echo stream while reading the echo back."""
    stream = await host.new_stream(peer, [ECHO])
    got = bytearray()

    async def send() -> None:
        await stream.write(payload)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while len(got) < len(payload):
            got += await stream.read(1 << 20)
    await stream.close()
    return bytes(got)


def test_installed_by_the_host_builder() -> None:
    from punch_net.p2p.host import build_host
    from punch_net.p2p.identity import new_identity

    build_host(new_identity())
    assert NoiseTransportReadWriter.read_msg.__module__ == fastpath.__name__
    assert SecureSession.read.__module__ == fastpath.__name__
    assert Yamux.handle_incoming.__module__ == fastpath.__name__
    assert YamuxStream.write.__module__ == fastpath.__name__


async def test_patched_hosts_move_every_byte() -> None:
    async with libp2p_host() as a, libp2p_host() as b:
        b.set_stream_handler(ECHO, echo)  # type: ignore[arg-type]
        with trio.fail_after(60):
            await a.connect(peer_info_of(host_addr(b)))
            for size in SIZES:
                payload = os.urandom(size)
                back = await round_trip(a, b.get_id(), payload)
                assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest(), size


async def test_many_streams_at_once_on_one_connection() -> None:
    """Frames of concurrent streams interleave; DATA frames go through the fast path,
    everything else (SYN, ACK, FIN, window updates) through py-libp2p's loop."""
    async with libp2p_host() as a, libp2p_host() as b:
        b.set_stream_handler(ECHO, echo)  # type: ignore[arg-type]
        before = fastpath.counts["fast_data_frames"]
        payloads = [os.urandom(size) for size in (*SIZES, 12, 1, 700_001, 12)]
        backs: dict[int, bytes] = {}

        async def one(i: int) -> None:
            backs[i] = await round_trip(a, b.get_id(), payloads[i])

        with trio.fail_after(60):
            await a.connect(peer_info_of(host_addr(b)))
            async with trio.open_nursery() as nursery:
                for i in range(len(payloads)):
                    nursery.start_soon(one, i)
        assert all(backs[i] == p for i, p in enumerate(payloads))
        assert fastpath.counts["fast_data_frames"] - before >= 2 * sum(len(p) for p in payloads) // (64 * 1024)


async def test_interop_with_a_plain_py_libp2p_process() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PLAIN_ECHO_PEER], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        assert proc.stdout is not None
        with trio.fail_after(60):
            addr = (await trio.to_thread.run_sync(proc.stdout.readline)).strip()
        assert "/p2p/" in addr, f"plain peer did not start: {addr!r}"
        async with libp2p_host() as a:
            with trio.fail_after(60):
                info = peer_info_of(addr)
                await a.connect(info)
                for size in (65_520, 5 * 1024 * 1024 + 3):
                    payload = os.urandom(size)
                    assert await round_trip(a, info.peer_id, payload) == payload
    finally:
        proc.kill()
        proc.wait(10)


async def test_grow_receive_window_gives_the_sender_credit() -> None:
    async with libp2p_host() as a, libp2p_host() as b:
        streams: list = []
        opened = trio.Event()

        async def hold(stream) -> None:  # type: ignore[no-untyped-def]
            streams.append(stream)
            opened.set()
            await trio.sleep(30)

        b.set_stream_handler(ECHO, hold)  # type: ignore[arg-type]
        with trio.fail_after(30):
            await a.connect(peer_info_of(host_addr(b)))
            stream = await a.new_stream(b.get_id(), [ECHO])
            await stream.write(b"x")
            await opened.wait()
            sender = streams[0].muxed_stream
            before = sender.send_window
            assert await fastpath.grow_receive_window(stream, 16 << 20)
            while sender.send_window == before:
                await trio.sleep(0.01)
        assert sender.send_window == 16 << 20  # nothing in flight: the whole new window is credit
        await stream.reset()


async def test_grow_receive_window_ignores_a_non_yamux_stream() -> None:
    class NotYamux:
        muxed_stream = object()

    assert not await fastpath.grow_receive_window(NotYamux(), 16 << 20)  # type: ignore[arg-type]


async def test_node_counts_the_bytes_on_its_connections() -> None:
    """node.stats() bytes_in/out: wire bytes after the Noise handshake, closed connections kept."""
    from punch_net.config import NodeConfig
    from punch_net.node import Node

    def config() -> NodeConfig:
        return NodeConfig(role="listener", listen_addr="127.0.0.1", port=0, ephemeral=True, bootstrap=[],
                          control=False)

    a, b = Node(config()), Node(config())
    payload = os.urandom(3 * 1024 * 1024 + 5)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        b.host.set_stream_handler(ECHO, echo)  # type: ignore[arg-type]
        with trio.fail_after(60):
            await a.dial(str(b.listen_addrs()[0]))
            assert await round_trip(a.host, b.host.get_id(), payload) == payload
        sa, sb = a.stats(), b.stats()
        for stats in (sa, sb):  # the payload went both ways (echo), plus framing and other protocols
            assert len(payload) <= stats["bytes_in"] < 2 * len(payload), stats
            assert len(payload) <= stats["bytes_out"] < 2 * len(payload), stats
        with trio.fail_after(30):
            await a.disconnect(str(b.host.get_id()))
            while b.host.get_network().get_connections(a.host.get_id()):
                await trio.sleep(0.05)
        assert a.stats()["bytes_in"] >= sa["bytes_in"] and b.stats()["bytes_out"] >= sb["bytes_out"]
        nursery.cancel_scope.cancel()


async def test_bug_and_fix_plaintext_peer_refused() -> None:
    """py-libp2p's default host also accepts `/plaintext/2.0.0` (and SECIO, TLS): a peer can
    connect unencrypted. Punch's host offers Noise only, so that peer is refused."""
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.exceptions import SwarmException
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    def plaintext_host():  # type: ignore[no-untyped-def]
        key = create_new_key_pair()
        return new_host(key_pair=key, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key)})  # type: ignore[dict-item]

    async with libp2p_host(plain=True) as default, libp2p_host() as ours:
        attacker = plaintext_host()
        async with attacker.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            with trio.fail_after(30):
                await attacker.connect(peer_info_of(host_addr(default)))  # the bug: no encryption
            assert attacker.get_network().get_connections(default.get_id())
            with trio.fail_after(30), pytest.raises(SwarmException):  # "failed to negotiate the secure protocol"
                await attacker.connect(peer_info_of(host_addr(ours)))
            assert not attacker.get_network().get_connections(ours.get_id())
            with trio.fail_after(30):  # a default (Noise-capable) py-libp2p peer still connects
                await default.connect(peer_info_of(host_addr(ours)))
