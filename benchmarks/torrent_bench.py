"""Torrent throughput on loopback, beside a raw TCP copy of the same bytes measured in the same run.

    .venv/bin/python benchmarks/torrent_bench.py [--size-mib 256] [--runs 3] [--rss-gib 1] [--skip-rss]

Runs real processes: a bootstrap `punch server`, one or three `punch torrent-server`s sharing
the file, and `punch torrent-client --no-seed --json`. Reports MB/s for
  raw TCP     one process sends the file over a TCP socket, another writes it to disk
  torrent x1  download from one server (transfer_s from the client's `complete` event:
              metainfo in hand -> every piece verified, written, file re-hashed and renamed)
  torrent x3  the same from three servers
the ratio torrent/raw TCP, and the client's peak RSS (its VmHWM, polled every 10 ms) downloading a 1 GiB file.
Each path runs --runs times (the raw copy twice as often: it takes ~0.13 s, so one run is
at the mercy of the scheduler); the table shows the median and the spread.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from punchproc import PunchProc

PY = sys.executable
MB = 1_000_000
CHUNK = 1 << 20

SENDER = r"""
import socket, sys
path, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
with open(path, "rb", buffering=0) as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        s.sendall(b)
s.close()
"""

RECEIVER = r"""
import socket, sys, time, os
path, size = sys.argv[1], int(sys.argv[2])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
c, _ = srv.accept()
t0 = time.perf_counter()
got = 0
buf = bytearray(1 << 20)
with open(path, "wb", buffering=0) as f:
    while got < size:
        n = c.recv_into(buf)
        if not n:
            break
        f.write(memoryview(buf)[:n]); got += n
    os.fsync(f.fileno())
print(time.perf_counter() - t0, got, flush=True)
"""


def raw_tcp(path: Path, out: Path, size: int) -> float:
    recv = subprocess.Popen([PY, "-c", RECEIVER, str(out), str(size)], stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None
    port = int(recv.stdout.readline())
    send = subprocess.Popen([PY, "-c", SENDER, str(path), str(port)])
    elapsed, got = recv.stdout.readline().split()
    send.wait(60)
    recv.wait(60)
    assert int(got) == size
    return float(elapsed)


def download(boot: str, info_hash: str, dest: Path, env: dict[str, str]) -> tuple[dict, float, int]:
    """Run a client to completion; returns (complete event, wall seconds, peak RSS bytes)."""
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    client = PunchProc("torrent-client", "--bootstrap", boot, "--info-hash", info_hash, "--download-dir", str(dest),
                  "--no-seed", "--timeout", "30", env=env)
    # The client's own peak (VmHWM of its address space), polled until it exits. Not
    # ru_maxrss: Linux carries the spawning process's high-water mark across exec, so under
    # a big parent (swarm_bench) ru_maxrss read the parent's ~150 MiB, not the client's.
    peak = 0
    status_file = Path(f"/proc/{client.p.pid}/status")
    while client.p.poll() is None:
        try:
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    time.sleep(0.2)
    done = client.wait("complete", timeout=5)
    return done, wall, peak


def spread(size: int, seconds: list[float]) -> str:
    """'min-max MB/s' over the runs."""
    rates = sorted(size / s / MB for s in seconds)
    return f"{rates[0]:.0f}-{rates[-1]:.0f} MB/s"


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(CHUNK * 4, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def measure(args: argparse.Namespace) -> tuple[float, list[tuple[str, float, str]], tuple | None]:
    """(raw TCP MB/s, [(path, MB/s, detail)], (size, complete event, wall, peak RSS) or None).

    benchmarks/swarm_bench.py reuses this for its loopback rows."""
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="punch-torrent-bench-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "PUNCH_DATA_DIR": str(root / "data")}
        shares = [root / f"share{i}" for i in range(3)]
        for s in shares:
            s.mkdir()
        digest = make_file(shares[0] / "bench.bin", size)
        for s in shares[1:]:
            os.link(shares[0] / "bench.bin", s / "bench.bin")
        rows: list[tuple[str, float, str]] = []

        raw_runs = []
        for _ in range(2 * args.runs):
            raw_runs.append(raw_tcp(shares[0] / "bench.bin", root / "raw.out", size))
            (root / "raw.out").unlink()
        raw_s = statistics.median(raw_runs)
        raw = size / raw_s / MB
        rows.append(("raw TCP copy (2 processes, to disk)", raw, f"{raw_s:.3f} s median of {len(raw_runs)} "
                                                               f"({spread(size, raw_runs)})"))

        procs: list[PunchProc] = []
        try:
            boot = PunchProc("server", env=env)
            procs.append(boot)
            boot_addr = boot.wait("listening")["addrs"][0]
            servers: list[PunchProc] = []

            def start_server(share: Path) -> str:
                srv = PunchProc("torrent-server", "--bootstrap", boot_addr, "--share-dir", str(share), env=env)
                procs.append(srv)
                servers.append(srv)
                ih = srv.wait("shared", timeout=300)["info_hash"]
                srv.wait("registered")
                return str(ih)

            def downloads(dest: Path, peers: int) -> tuple[list[float], float, int]:
                """--runs downloads; returns transfer seconds, the median wall and the peak RSS."""
                secs, walls, rss = [], [], 0
                for _ in range(args.runs):
                    done, wall, peak = download(boot_addr, info_hash, dest, env)
                    assert done["sha256"] == digest, "download corrupt"
                    assert len(done["from_peers"]) == peers, done["from_peers"]
                    secs.append(done["transfer_s"])
                    walls.append(wall)
                    rss = max(rss, peak)
                    (dest / "bench.bin").unlink()
                return secs, statistics.median(walls), rss

            info_hash = start_server(shares[0])
            secs1, wall1, rss1 = downloads(root / "dl1", 1)
            for s in shares[1:]:
                start_server(s)
            t1 = statistics.median(secs1)
            rows.append(("torrent, 1 server", size / t1 / MB,
                         f"{t1:.3f} s transfer ({spread(size, secs1)}), {wall1:.2f} s wall, "
                         f"RSS {rss1 / 2**20:.0f} MiB"))
            secs3, wall3, _rss3 = downloads(root / "dl3", 3)
            t3 = statistics.median(secs3)
            rows.append(("torrent, 3 servers", size / t3 / MB,
                         f"{t3:.3f} s transfer ({spread(size, secs3)}), {wall3:.2f} s wall, all 3 sent pieces"))
            rss_row = None
            if not args.skip_rss:
                big = int(args.rss_gib * 1024**3)
                rss_share = root / "share-rss"
                rss_share.mkdir()
                make_file(rss_share / "big.bin", big)
                srv = PunchProc("torrent-server", "--bootstrap", boot_addr, "--share-dir", str(rss_share), env=env)
                procs.append(srv)
                big_hash = srv.wait("shared", timeout=600)["info_hash"]
                srv.wait("registered")
                for server in servers:
                    server.stop()
                doneb, wallb, rssb = download(boot_addr, big_hash, root / "dlrss", env)
                rss_row = (big, doneb, wallb, rssb)
        finally:
            for p in procs:
                p.stop()
    return raw, rows, rss_row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3, help="downloads per path (median reported; default 3)")
    ap.add_argument("--rss-gib", type=float, default=1.0)
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    raw, rows, rss_row = measure(args)
    print(f"\nTorrent benchmark, {args.size_mib} MiB file, loopback, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'path':<38} {'MB/s':>8} {'x raw':>7}  detail")
    for name, mbs, detail in rows:
        print(f"{name:<38} {mbs:8.1f} {mbs / raw:7.3f}  {detail}")
    if rss_row is not None:
        big, doneb, wallb, rssb = rss_row
        print(f"client peak RSS for {big / 2**30:.1f} GiB: {rssb / 2**20:.0f} MiB "
              f"({big / doneb['transfer_s'] / MB:.1f} MB/s, {wallb:.1f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
