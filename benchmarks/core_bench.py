"""Core benchmarks: JSON command round trips between two processes beside a raw-TCP echo
baseline measured in the same run, and discovery time (dialer start -> first reply).

    .venv/bin/python benchmarks/core_bench.py            # this bench alone, prints a table
    .venv/bin/python benchmarks/run.py                   # every bench
    BENCH_DISCOVERY_RUNS=0 .venv/bin/python benchmarks/core_bench.py          # round trips only
    CORE_BENCH_CODE=/path/to/other/checkout .venv/bin/python benchmarks/core_bench.py  # A/B: its punch_net

The CPU rows (Linux) are each process's CPU time over the pipelined run divided by its
requests: on a shared machine they move less with the load than requests/s does.

Everything runs on 127.0.0.1. The far side of each round-trip test is a separate
process started here (`serve-tcp`, `serve-punch` modes of this file); the near side runs
in this process. The punch peer is a plain `Node` without the CLI printer, so the figures
are the network core's, not the terminal's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
CODE = Path(os.environ.get("CORE_BENCH_CODE", REPO)).resolve()  # whose punch_net is measured (A/B)
sys.path.insert(0, str(CODE))

from punch_net.messaging import codec  # noqa: E402

SEQUENTIAL = int(os.environ.get("BENCH_SEQUENTIAL", "2000"))
CONCURRENT_TOTAL = int(os.environ.get("BENCH_CONCURRENT", "10000"))
IN_FLIGHT = 32
DISCOVERY_RUNS = int(os.environ.get("BENCH_DISCOVERY_RUNS", "10"))
PAYLOAD = {"text": "Hello from dialer! Message #1", "n": 1}

TARGET_RTT_P50_MS = 2.0
TARGET_REQ_PER_S = 3000.0
TARGET_DISCOVERY_P50_S = 1.5


@dataclass
class Row:
    """One line of the results table."""

    metric: str
    value: str
    baseline: str = ""
    target: str = ""
    ok: bool | None = None  # None: no target


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------ far side (child processes)


async def serve_tcp() -> None:
    """Raw trio TCP: echo each length-prefixed frame back, as fast as Python can."""

    async def handle(stream: trio.SocketStream) -> None:
        decoder = codec.FrameDecoder()
        try:
            while data := await stream.receive_some(65536):
                frames = decoder.feed(data)
                if frames:
                    await stream.send_all(b"".join(codec.encode_frame(f) for f in frames))
        except trio.BrokenResourceError:
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(handle, listeners)


async def serve_punch() -> None:
    """A Punch node answering built-in commands; prints its multiaddr."""
    from punch_net.config import NodeConfig
    from punch_net.p2p.helpers import quiet_libp2p_logging
    from punch_net.runtime import Runtime

    quiet_libp2p_logging()
    # the whole node a `punch server` runs (kernel and components), not the bare kernel
    node = Runtime(NodeConfig(role="server", listen_addr="127.0.0.1", port=0, ephemeral=True, bootstrap=[])).node
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        print(node.listen_addrs()[0], flush=True)


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) process `pid` has used; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(mode: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, mode], stdout=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise RuntimeError(f"{mode} did not start")
    return proc, line


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------ near side


async def tcp_round_trips(port: int) -> tuple[list[float], float]:
    """(sequential RTTs in seconds, requests/s with IN_FLIGHT pipelined) over raw TCP."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    decoder = codec.FrameDecoder()
    pending: list[bytes] = []

    async def recv_one() -> bytes:
        while not pending:
            pending.extend(decoder.feed(await stream.receive_some(65536)))
        return pending.pop(0)

    def frame(i: int) -> bytes:
        return codec.encode_json({"id": str(i), "command": "echo", "args": PAYLOAD, "from": "bench"})

    rtts = []
    for i in range(SEQUENTIAL):
        start = time.perf_counter()
        await stream.send_all(frame(i))
        json.loads(await recv_one())
        rtts.append(time.perf_counter() - start)

    slots = trio.Semaphore(IN_FLIGHT)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            for _ in range(CONCURRENT_TOTAL):
                json.loads(await recv_one())
                slots.release()

        nursery.start_soon(reader)
        for i in range(CONCURRENT_TOTAL):
            await slots.acquire()
            await stream.send_all(frame(i))
    rate = CONCURRENT_TOTAL / (time.perf_counter() - start)
    await stream.aclose()
    return rtts, rate


async def punch_round_trips(addr: str, server_pid: int = 0) -> tuple[list[float], float, tuple[float, float] | None]:
    """(sequential RTTs, requests/s with IN_FLIGHT concurrent, (dialer, server) CPU
    microseconds per pipelined request or None) through Node.request."""
    from punch_net.config import NodeConfig
    from punch_net.runtime import Runtime

    node = Runtime(NodeConfig(role="dialer", listen_addr="127.0.0.1", port=0, ephemeral=True, bootstrap=[])).node
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with trio.fail_after(20):
            peer = await node.dial(addr)
            await node.request(peer, "echo", PAYLOAD)  # open the session
        rtts = []
        for _ in range(SEQUENTIAL):
            start = time.perf_counter()
            resp = await node.request(peer, "echo", PAYLOAD)
            rtts.append(time.perf_counter() - start)
            assert resp.ok

        remaining = CONCURRENT_TOTAL

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                resp = await node.request(peer, "echo", PAYLOAD)
                assert resp.ok

        cpu_before = time.process_time(), process_cpu(server_pid) if server_pid else None
        start = time.perf_counter()
        async with trio.open_nursery() as workers:
            for _ in range(IN_FLIGHT):
                workers.start_soon(worker)
        rate = CONCURRENT_TOTAL / (time.perf_counter() - start)
        server_after = process_cpu(server_pid) if server_pid else None
        cpu = None
        if cpu_before[1] is not None and server_after is not None:
            cpu = ((time.process_time() - cpu_before[0]) / CONCURRENT_TOTAL * 1e6,
                   (server_after - cpu_before[1]) / CONCURRENT_TOTAL * 1e6)
        nursery.cancel_scope.cancel()
    return rtts, rate, cpu


def read_json_lines(proc: subprocess.Popen[str], on_event: Callable[[dict[str, Any]], None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            on_event(json.loads(line))
        except ValueError:
            pass


def cli_env() -> dict[str, str]:
    """The environment of `punch` processes: CODE's punch_net first (A/B)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(CODE), os.environ.get("PYTHONPATH")) if p)}


def punch_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "punch_net.cli", *args, "--listen-addr", "127.0.0.1", "--port", "0",
            "--ephemeral", "--json"]


def discovery_times(runs: int) -> tuple[list[float], list[float]]:
    """Seconds from starting a `punch dialer` process to its first reply, `runs` times;
    and, of that, the part after the process printed `listening` (the network's share:
    the rest is interpreter start and imports)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        server = subprocess.Popen(punch_cli("server"), stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                  env=cli_env())
        procs.append(server)
        assert server.stdout is not None
        addr = json.loads(server.stdout.readline())["addrs"][0]
        threading.Thread(target=read_json_lines, args=(server, lambda e: None), daemon=True).start()
        listener = subprocess.Popen(punch_cli("listener", "--bootstrap", addr), stdout=subprocess.PIPE, text=True,
                                    stdin=subprocess.DEVNULL, env=cli_env())
        procs.append(listener)
        registered = threading.Event()
        threading.Thread(target=read_json_lines, daemon=True,
                         args=(listener, lambda e: e.get("event") == "registered" and registered.set())).start()
        if not registered.wait(30):
            raise RuntimeError("listener did not register")
        times: list[float] = []
        network: list[float] = []
        for _ in range(runs):
            start = time.perf_counter()
            dialer = subprocess.Popen(punch_cli("dialer", "--bootstrap", addr, "--count", "1", "--timeout", "30"),
                                      stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=cli_env())
            procs.append(dialer)
            assert dialer.stdout is not None
            took = None
            listening_ts = 0.0
            for line in dialer.stdout:
                if '"event": "listening"' in line:
                    listening_ts = json.loads(line)["ts"]
                if '"event": "reply"' in line:
                    took = time.perf_counter() - start
                    network.append(json.loads(line)["ts"] - listening_ts)
                    break
            stop(dialer)
            if took is None:
                raise RuntimeError("dialer got no reply")
            times.append(took)
        return times, network
    finally:
        for proc in procs:
            stop(proc)


# ------------------------------------------------------------------ the table


def collect() -> list[Row]:
    """Run every core measurement; returns the table rows (run.py calls this)."""
    import punch_net

    rows: list[Row] = [Row("code measured", str(Path(punch_net.__file__).parent.parent))]
    tcp, tcp_addr = spawn("serve-tcp")
    try:
        tcp_rtts, tcp_rate = trio.run(tcp_round_trips, int(tcp_addr))
    finally:
        stop(tcp)
    peer, peer_addr = spawn("serve-punch")
    try:
        rtts, rate, cpu = trio.run(punch_round_trips, peer_addr, peer.pid)
    finally:
        stop(peer)
    ms = 1000.0
    p50, p99 = pct(rtts, 0.5) * ms, pct(rtts, 0.99) * ms
    rows += [
        Row("JSON cmd RTT p50, sequential", f"{p50:.3f} ms", f"{pct(tcp_rtts, 0.5) * ms:.3f} ms",
            f"<= {TARGET_RTT_P50_MS:g} ms", p50 <= TARGET_RTT_P50_MS),
        Row("JSON cmd RTT p99, sequential", f"{p99:.3f} ms", f"{pct(tcp_rtts, 0.99) * ms:.3f} ms"),
        Row(f"JSON cmd req/s, {IN_FLIGHT} in flight", f"{rate:,.0f}", f"{tcp_rate:,.0f}",
            f">= {TARGET_REQ_PER_S:,.0f}", rate >= TARGET_REQ_PER_S),
    ]
    if cpu is not None:
        rows.append(Row(f"CPU per request, {IN_FLIGHT} in flight (dialer / server)", f"{cpu[0]:.1f} / {cpu[1]:.1f} µs"))
    if DISCOVERY_RUNS <= 0:
        load = os.getloadavg()[0]
        rows.append(Row("machine load average (1 min) after the run", f"{load:.2f} on {os.cpu_count()} cores"))
        return rows
    times, network = discovery_times(DISCOVERY_RUNS)
    d50 = statistics.median(times)
    startup = [t - n for t, n in zip(times, network, strict=True)]
    rows += [
        Row(f"discovery p50 (dialer start -> reply, n={len(times)})", f"{d50:.3f} s", "",
            f"<= {TARGET_DISCOVERY_P50_S:g} s", d50 <= TARGET_DISCOVERY_P50_S),
        Row("discovery min / max", f"{min(times):.3f} / {max(times):.3f} s"),
        Row("  of which after 'listening' (p50)", f"{statistics.median(network):.3f} s"),
        Row("  python start + imports (p50)", f"{statistics.median(startup):.3f} s"),
    ]
    load = os.getloadavg()[0]
    rows.append(Row("machine load average (1 min) after the run", f"{load:.2f} on {os.cpu_count()} cores"))
    return rows


def print_table(title: str, rows: list[Row]) -> None:
    headers = ("metric", "punch", "raw TCP baseline", "target", "")
    body = [(r.metric, r.value, r.baseline, r.target, "" if r.ok is None else ("ok" if r.ok else "MISSED"))
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for b in body:
        print("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip())


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "serve-tcp":
        trio.run(serve_tcp)
    elif mode == "serve-punch":
        trio.run(serve_punch)
    else:
        print_table("core (loopback, two processes)", collect())
