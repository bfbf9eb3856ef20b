"""Torrent benchmark table of issue 13, every row beside its bound or baseline from the same run.

    sudo .venv/bin/python benchmarks/swarm_bench.py [--size-mib 64] [--rate-mbit 80] [--downloaders 4 8] [--runs 2]
        [--multi-mib 128] [--servers 1 2 4] [--loop-mib 256] [--rss-gib 1] [--skip multi swarm loopback]

Figures and how to read them: docs/TORRENT.md, "Swarm benchmark".

Multi-source (tbf rig): one `torrent-client --no-seed` in h0 downloads a --multi-mib file
from N `torrent-server`s in h1..hN. Row: process start to exit rate, beside 0.9·N·u (the
target) and N raw TCP senders (one per server host, size/N bytes each, received to disk
in h0) in the same rig.

Loopback (no rig): benchmarks/torrent_bench.py's measure(): 1 server vs 0.3 × a raw TCP
copy, 3 servers vs 1 server, client peak RSS on --rss-gib vs 150 MiB.

Swarm (tbf rig): one seeder and N downloaders, each in its own network namespace on a bridge, every
host's uplink limited with `tc qdisc … tbf rate R` (tests/support/swarm_rig.py; needs
root). The seeder shares an F-byte file; the N `punch torrent-client`s start together.
Per scenario the table shows:
  last complete   seconds from the downloaders' start (process spawn) to the last `complete`
  listening       seconds from that start until the last downloader listened (process start-up:
                  N interpreters importing at once)
  transfer        the slowest client's `transfer_s` (metainfo in hand -> file in place)
  seeder alone    N·F/u_s: the seeder sending every copy itself (what the swarm must beat)
  Kumar–Ross      max(F/u_s, N·F/(u_s + Σu_i)) (downloads are not limited, so F/d_min = 0):
                  no scheme can do better (Kumar & Ross, 2006)
  ratio           last complete / Kumar–Ross
  seeder copies   pieces the seeder uploaded / pieces in the file (1.0: each piece once,
                  the downloaders spread the rest)
  cpu s/dl        CPU seconds (user + system) a downloader used from spawn to the last
                  `complete`, mean over the downloaders (load-independent, unlike the times)
  traded          per downloader, pieces it got from other downloaders (all of them were
                  still downloading when they sent them unless they had completed earlier:
                  'early' counts only pieces from downloaders that completed after it)
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from nat_harness import Punch, is_kind
from swarm_rig import BOOT_IP, BOOT_PORT, SwarmRig, host_ip, swarm_unavailable_reason

from punch_net.torrent import PIECE_LENGTH

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torrent_bench  # the loopback rows

MB = 1_000_000
START = 90.0
# A/B against other code: what runs instead of `python -m punch_net.cli` (space-separated)
PROGRAM = os.environ.get("SWARM_BENCH_PROGRAM", "").split() or None


def punch(rig: SwarmRig, where: str, name: str, args: list[str]) -> Punch:
    return Punch(rig, where, name, args, program=PROGRAM)


def compile_bytecode() -> None:
    """Write the bytecode of this tree's punch_net, as a pip-installed punch has it, and
    `punch`'s table of dataclass methods (punch_net/cli/codecache.py) by running it once.
    An editable checkout under PYTHONDONTWRITEBYTECODE=1 (this machine's environment) has
    neither, and every `punch` process then compiles ~115 modules from source at start
    (~78 ms of CPU) and ~740 dataclass methods (~47 ms): docs/TORRENT.md, "Third pass"."""
    import compileall
    import subprocess

    import punch_net

    package = Path(punch_net.__file__).parent
    compileall.compile_dir(package, quiet=1)  # writes whatever -B says
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "punch_net.cli", "torrent-client", "--help"], cwd=package.parent,
                   env=env, stdout=subprocess.DEVNULL, check=True)
RAW_PORT = 5001

RAW_RECV = r"""
import os, selectors, socket, sys, time
path, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[4]))); srv.listen(n)
print("ready", flush=True)
sel = selectors.DefaultSelector(); buf = bytearray(1 << 20); got = 0; t0 = None
with open(path, "wb", buffering=0) as f:
    for _ in range(n):
        c, _a = srv.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
        t0 = t0 or time.monotonic()
    while got < size:
        for key, _m in sel.select():
            k = key.fileobj.recv_into(buf)
            if not k:
                sel.unregister(key.fileobj)
                continue
            f.write(memoryview(buf)[:k]); got += k
    os.fsync(f.fileno())
print(time.monotonic() - t0, got, flush=True)
"""

RAW_SEND = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
left = int(sys.argv[3]); block = b"x" * (1 << 20)
while left:
    left -= s.send(memoryview(block)[:min(left, len(block))])
s.close()
"""


def node_args(boot_id: str) -> list[str]:
    return ["--listen-addr", "0.0.0.0", "--port", "4001", "--ephemeral", "--no-port-mapping",
            "--bootstrap", f"/ip4/{BOOT_IP}/tcp/{BOOT_PORT}/p2p/{boot_id}"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (a load-independent cost, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(rig: SwarmRig, boot_id: str, info_hash: str, n: int, root: Path) -> dict[str, object]:
    clients = []
    t0 = time.monotonic()
    for i in range(1, n + 1):
        dest = root / f"dl{i}"
        dest.mkdir(parents=True)
        clients.append(punch(rig, f"h{i}", f"c{i}", ["torrent-client", *node_args(boot_id), "--info-hash", info_hash,
                                                     "--download-dir", str(dest), "--timeout", "120"]))
    ids = {c.peer_id: c for c in clients}
    listening = max(c.wait_for(is_kind("listening"), START, "listening")["_t"] for c in clients) - t0
    done = {c.name: c.wait_for(is_kind("complete"), 600, "complete") for c in clients}
    last = max(e["_t"] for e in done.values()) - t0
    traded, early = [], []
    for c in clients:
        e = done[c.name]
        traded.append(sum(k for p, k in e["from_peers"].items() if p in ids))
        early.append(sum(k for p, k in e["from_peers"].items()
                         if p in ids and done[ids[p].name]["_t"] > e["_t"]))
    cpu = [cpu_seconds(c.proc.popen.pid) for c in clients]  # all complete: start-up + transfer
    out = {"last": last, "transfer": max(float(e["transfer_s"]) for e in done.values()),
           "traded": traded, "early": early, "listening": listening,
           "cpu": statistics.mean(cpu)}
    for c in clients:
        c.stop()
    if os.environ.get("SWARM_BENCH_EVENTS"):  # every client's events, for a timeline (t: s since start)
        (root / "events.json").write_text(json.dumps(
            {c.name: {"peer_id": c.peer_id, "events": [{**e, "t": e["_t"] - t0} for e in c.events]}
             for c in clients}))
    return out


def wait_exit(popen: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """(exit code, monotonic time the process ended). Not Popen.wait(timeout): that polls with
    sleeps growing to 50 ms, which added up to 50 ms to every start->exit time it measured."""
    try:
        fd = os.pidfd_open(popen.pid)
    except ProcessLookupError:  # already reaped
        return popen.wait(), time.monotonic()
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # readable once the process has ended
        if not poller.poll(timeout * 1000):
            raise subprocess.TimeoutExpired(popen.args, timeout)
        ended = time.monotonic()
    finally:
        os.close(fd)
    return popen.wait(), ended


def raw_senders(rig: SwarmRig, n: int, size: int, root: Path) -> float:
    """Seconds for n raw TCP senders (h1..hn) to deliver `size` bytes in all to a receiver in h0 (to disk)."""
    recv = rig.spawn("h0", f"rawrecv{n}", [sys.executable, "-c", RAW_RECV, str(root / "raw.out"), str(size),
                                           str(n), str(RAW_PORT)])
    assert recv.popen.stdout is not None
    assert recv.popen.stdout.readline().strip() == b"ready"
    share = [size // n + (1 if i < size % n else 0) for i in range(n)]
    senders = [rig.spawn(f"h{i + 1}", f"rawsend{n}_{i}", [sys.executable, "-c", RAW_SEND, host_ip(0),
                                                          str(RAW_PORT), str(share[i])]) for i in range(n)]
    elapsed, got = recv.popen.stdout.readline().split()
    for p in [recv, *senders]:
        p.popen.wait(60)
    (root / "raw.out").unlink()
    assert int(got) == size, got
    return float(elapsed)


def multi_source(rig: SwarmRig, boot_id: str, servers: list[int], size: int, runs: int,
                 root: Path) -> list[tuple[int, list[float], list[float], list[float]]]:
    """Per N: (N, start->exit seconds, transfer_s, raw TCP seconds) over `runs`."""
    share = root / "mshare0"
    share.mkdir()
    (share / "multi.bin").write_bytes(os.urandom(size))
    out = []
    started: list[Punch] = []
    info_hash = ""
    try:
        for n in servers:
            while len(started) < n:
                i = len(started) + 1
                d = root / f"mshare{i}"
                if not d.exists():
                    d.mkdir()
                    os.link(share / "multi.bin", d / "multi.bin")
                srv = punch(rig, f"h{i}", f"msrv{i}", ["torrent-server", *node_args(boot_id), "--share-dir", str(d)])
                info_hash = str(srv.wait_for(is_kind("shared"), START, "shared")["info_hash"])
                srv.wait_for(is_kind("announced", info_hash=info_hash), START, "announced")
                started.append(srv)
            walls, transfers, raws = [], [], []
            for r in range(runs):
                raws.append(raw_senders(rig, n, size, root))
                dest = root / f"m{n}r{r}"
                dest.mkdir()
                t0 = time.monotonic()
                c = punch(rig, "h0", f"mcli{n}_{r}", ["torrent-client", *node_args(boot_id), "--info-hash",
                                                      info_hash, "--download-dir", str(dest), "--no-seed",
                                                      "--timeout", "120"])
                rc, ended = wait_exit(c.proc.popen, 180)
                wall = ended - t0
                done = c.wait_for(is_kind("complete"), 5, "complete")
                assert rc == 0 and len(done["from_peers"]) == n, (rc, done["from_peers"])
                walls.append(wall)
                transfers.append(float(done["transfer_s"]))
                c.stop()
                shutil.rmtree(dest)
            out.append((n, walls, transfers, raws))
    finally:
        for srv in started:
            srv.stop()
    return out


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind the rig's `with`: processes killed, namespaces deleted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=64, help="swarm file size")
    ap.add_argument("--rate-mbit", type=float, default=80.0, help="every host's uplink (tbf)")
    ap.add_argument("--downloaders", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--multi-mib", type=int, default=128, help="multi-source file size")
    ap.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--loop-mib", type=int, default=256, help="loopback file size")
    ap.add_argument("--rss-gib", type=float, default=1.0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["multi", "swarm", "loopback"])
    ap.add_argument("--no-compile", action="store_true",
                    help="do not write punch_net's bytecode first (every process compiles the sources)")
    args = ap.parse_args()
    if not args.no_compile:
        compile_bytecode()
    signal.signal(signal.SIGTERM, _terminate)
    size = args.size_mib * 1024 * 1024
    msize = args.multi_mib * 1024 * 1024
    u = args.rate_mbit * 1e6 / 8  # bytes/s per uplink
    rows = []
    multi: list[tuple[int, list[float], list[float], list[float]]] = []
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        root = Path(os.environ.get("SWARM_BENCH_DIR") or tmp)
        rig_wanted = "multi" not in args.skip or "swarm" not in args.skip
        reason = swarm_unavailable_reason() if rig_wanted else None
        if reason:
            print(f"swarm rig unavailable: {reason}", file=sys.stderr)
            return 2
        if rig_wanted:
            hosts = 1 + max([*args.downloaders, *args.servers])
            with SwarmRig(prefix=f"pb{os.getpid() % 10000}_", hosts=hosts, rate_mbit=args.rate_mbit,
                          log_dir=root) as rig:
                boot = punch(rig, "boot", "boot", ["server", "--listen-addr", "0.0.0.0", "--no-port-mapping",
                                                   "--port", str(BOOT_PORT), "--data-dir", str(root / "boot")])
                if "multi" not in args.skip:
                    multi = multi_source(rig, boot.peer_id, args.servers, msize, args.runs, root)
                if "swarm" not in args.skip:
                    share = root / "share"
                    share.mkdir()
                    (share / "swarm.bin").write_bytes(os.urandom(size))
                    seeder = punch(rig, "h0", "seeder", ["torrent-server", *node_args(boot.peer_id),
                                                         "--share-dir", str(share)])
                    info_hash = str(seeder.wait_for(is_kind("shared"), START, "shared")["info_hash"])
                    seeder.wait_for(is_kind("announced", info_hash=info_hash), START, "announced")
                    for n in args.downloaders:
                        runs = [one_run(rig, boot.peer_id, info_hash, n, root / f"n{n}r{r}")
                                for r in range(args.runs)]
                        alone = n * size / u
                        kr = max(size / u, n * size / (u + n * u))
                        lasts = [float(r["last"]) for r in runs]  # type: ignore[arg-type]
                        rows.append((n, lasts, [float(r["transfer"]) for r in runs], alone, kr, runs))  # type: ignore[arg-type]
        loop = None
        if "loopback" not in args.skip:
            loop = torrent_bench.measure(argparse.Namespace(size_mib=args.loop_mib, runs=3, rss_gib=args.rss_gib,
                                                            skip_rss=args.rss_gib <= 0))
    load = os.getloadavg()
    print(f"\n{os.cpu_count()} CPUs, load average at start {load_at_start[0]:.2f}, at end {load[0]:.2f} "
          f"(1 min), {load[1]:.2f} (5 min)")
    if multi:
        print(f"\nmulti-source: N torrent-servers -> 1 torrent-client --no-seed, {args.multi_mib} MiB, "
              f"every uplink {u / MB:.1f} MB/s (tc tbf), {args.runs} run(s) each\n")
        print(f"{'N':>3} {'start->exit MB/s':>18} {'target 0.9*N*u':>15} {'x target':>9} {'transfer MB/s':>14} "
              f"{'raw TCP MB/s':>13} {'start->exit / raw':>18}")
        for n, walls, transfers, raws in multi:
            w, t, r = (statistics.median(x) for x in (walls, transfers, raws))
            target = 0.9 * n * u
            print(f"{n:>3} {msize / w / MB:>10.1f} ({w:4.1f}s) {target / MB:>15.1f} {msize / w / target:>9.2f} "
                  f"{msize / t / MB:>14.1f} {msize / r / MB:>13.1f} {r / w:>18.2f}")
    if rows:
        print(f"\nswarm: 1 seeder + N downloaders, {args.size_mib} MiB, every uplink {u / MB:.1f} MB/s (tc tbf), "
              f"{args.runs} run(s) each; target ratio <= 1.3\n")
        pieces = -(-size // PIECE_LENGTH)
        print(f"{'N':>3} {'last complete s':>18} {'listening s':>12} {'transfer s':>11} {'seeder alone s':>15} "
              f"{'Kumar-Ross s':>13} {'ratio':>6} {'seeder copies':>14} {'cpu s/dl':>9}  traded (early) per downloader")
        for n, lasts, transfers, alone, kr, runs in rows:
            med = statistics.median(lasts)
            spread = f"{min(lasts):.1f}-{max(lasts):.1f}"
            traded = "; ".join(", ".join(f"{t}({e})" for t, e in zip(r["traded"], r["early"], strict=True))  # type: ignore[call-overload]
                               for r in runs)
            # every piece a downloader did not get from another downloader came from the seeder
            copies = statistics.median((n * pieces - sum(r["traded"])) / pieces for r in runs)  # type: ignore[call-overload, arg-type]
            listen = statistics.median(float(r["listening"]) for r in runs)  # type: ignore[arg-type]
            transfer = statistics.median(transfers)
            cpu = statistics.median(float(r["cpu"]) for r in runs)  # type: ignore[arg-type]
            print(f"{n:>3} {med:>8.1f} ({spread:>9}) {listen:>12.1f} {transfer:>11.1f} {alone:>15.1f} "
                  f"{kr:>13.1f} {med / kr:>6.2f} {copies:>14.2f} {cpu:>9.2f}  {traded}")
    if loop is not None:
        raw, lrows, rss_row = loop
        by = {name: mbs for name, mbs, _ in lrows}
        one, three = by["torrent, 1 server"], by["torrent, 3 servers"]
        print(f"\nloopback, {args.loop_mib} MiB (benchmarks/torrent_bench.py), median of 3\n")
        print(f"{'row':<30} {'measured':>14} {'bound':>22} {'met':>4}")
        print(f"{'1 server vs raw TCP copy':<30} {one:>9.1f} MB/s {f'0.3 x {raw:.0f} = {0.3 * raw:.0f} MB/s':>22} "
              f"{'yes' if one >= 0.3 * raw else 'no':>4}")
        print(f"{'3 servers vs 1 server':<30} {three:>9.1f} MB/s {f'>= {one:.0f} MB/s':>22} "
              f"{'yes' if three >= one else 'no':>4}")
        if rss_row is not None:
            big, _done, _wall, rss = rss_row
            print(f"{f'client RSS on {big / 2**30:.1f} GiB':<30} {rss / 2**20:>10.0f} MiB {'<= 150 MiB':>22} "
                  f"{'yes' if rss <= 150 * 2**20 else 'no':>4}")
        for name, mbs, detail in lrows:
            print(f"  {name:<36} {mbs:8.1f} MB/s  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
