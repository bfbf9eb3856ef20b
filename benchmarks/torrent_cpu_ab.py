"""Interleaved A/B of torrent download CPU on loopback: trees side by side, one download each per round.

    .venv/bin/python benchmarks/torrent_cpu_ab.py ROUNDS SERVERS TREE [TREE ...]

Each TREE is a checkout (a directory holding punch_net); its processes run with that directory
as working directory and PYTHONPATH, so `python -m punch_net.cli` imports its code. Per round
and tree: a bootstrap server, SERVERS torrent servers (hard links of one file) and one
`torrent-client --no-seed`. Prints per download: MB/s (from `complete`'s transfer_s), the
client's whole-process CPU, the servers' CPU during the download, the client's peak RSS, and
the client's and servers' CPU between the client's first `connected`/`progress` event and
`complete` (start-up left out), read from /proc. On a shared machine compare the CPU columns.
PROFILE=client|server runs the last tree's client (or first server) under cProfile and
writes /tmp/torrent-SERVERS-{client,server}.prof. SIZE_MIB (default 256) sets the file size.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from punchproc import PY, PunchProc

PROFILER = r"""
import cProfile, os, sys
out, profile, real_exit = os.environ["PROF_OUT"], cProfile.Profile(), os._exit
def leave(code):  # punch leaves with os._exit: dump the stats first
    profile.disable()
    profile.dump_stats(out)
    real_exit(code)
os._exit = leave
from punch_net.cli import entry
profile.enable()
leave(entry.main(sys.argv[1:]) or 0)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proc(PunchProc):
    """A punch process of `tree`; `marks` holds (own CPU, watched processes' CPU) at the
    first start-of-transfer event and at `complete`."""

    wait_timeout = 300.0

    def __init__(self, tree: str, *argv: str, env: dict[str, str], prof: str = "",
                 watch: tuple[Proc, ...] = ()) -> None:
        self.marks: dict[str, tuple[float, list[float]]] = {}  # before the reader thread starts
        self.watch = watch
        super().__init__(*argv, env={**env, "PYTHONPATH": tree, "PROF_OUT": prof}, cwd=tree,
                         cmd=(PY, "-c", PROFILER) if prof else (PY, "-m", "punch_net.cli"))

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        mark = "start" if kind in ("connected", "progress") else kind
        if mark in ("start", "complete") and mark not in self.marks:
            try:
                self.marks[mark] = (cpu_seconds(self.p.pid), [cpu_seconds(w.p.pid) for w in self.watch])
            except OSError:
                pass


def one_download(tree: str, root: Path, shares: list[Path], env: dict[str, str], prof: str,
                 size: int) -> tuple[float, ...]:
    procs: list[Proc] = []
    try:
        boot = Proc(tree, "server", env=env)
        procs.append(boot)
        boot_addr = boot.wait("listening")["addrs"][0]
        servers = []
        for i, share in enumerate(shares):
            server = Proc(tree, "torrent-server", "--bootstrap", boot_addr, "--share-dir", str(share), env=env,
                          prof=f"/tmp/torrent-{len(shares)}-server.prof" if prof == "server" and i == 0 else "")
            procs.append(server)
            servers.append(server)
        info_hash = ""
        for server in servers:
            info_hash = server.wait("shared")["info_hash"]
            server.wait("registered")
        before = sum(cpu_seconds(s.p.pid) for s in servers)
        dest = root / "download"
        dest.mkdir(exist_ok=True)
        client = Proc(tree, "torrent-client", "--bootstrap", boot_addr, "--info-hash", info_hash,
                      "--download-dir", str(dest), "--no-seed", "--timeout", "60", env=env,
                      prof=f"/tmp/torrent-{len(shares)}-client.prof" if prof == "client" else "",
                      watch=tuple(servers))
        _, _, usage = os.wait4(client.p.pid, 0)
        client.p.returncode = 0
        time.sleep(0.2)
        done = client.wait("complete", 5)
        servers_cpu = sum(cpu_seconds(s.p.pid) for s in servers) - before
        start, end = client.marks.get("start"), client.marks.get("complete")
        in_client = end[0] - start[0] if start and end else float("nan")
        in_servers = sum(end[1]) - sum(start[1]) if start and end else float("nan")
        for f in dest.iterdir():
            f.unlink()
        return (size / done["transfer_s"] / 1e6, usage.ru_utime + usage.ru_stime, servers_cpu,
                usage.ru_maxrss / 1024, in_client, in_servers)
    finally:
        for p in procs:
            p.stop()


def main() -> None:
    rounds, nservers, trees = int(sys.argv[1]), int(sys.argv[2]), [os.path.abspath(t) for t in sys.argv[3:]]
    size = int(os.environ.get("SIZE_MIB", "256")) << 20
    profile = os.environ.get("PROFILE", "")
    results: dict[str, list[tuple[float, ...]]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="punch-cpu-ab-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "PUNCH_DATA_DIR": str(root / "data")}
        first = root / "file.bin"
        with first.open("wb") as f:
            for _ in range(size >> 22):
                f.write(os.urandom(1 << 22))
        shares = [root / f"share{i}" for i in range(nservers)]
        for share in shares:
            share.mkdir()
            os.link(first, share / "bench.bin")
        for r in range(rounds):
            for tree in trees:
                prof = profile if tree == trees[-1] else ""
                results[tree].append(one_download(tree, root, shares, env, prof, size))
            row = {t: " ".join(f"{x:.2f}" for x in results[t][-1]) for t in trees}
            print(f"round {r} load {os.getloadavg()[0]:.2f} {row}", flush=True)
    for tree, rows in results.items():
        med = [statistics.median(x[i] for x in rows) for i in range(6)]
        print(f"{tree}: n={len(rows)} MB/s {med[0]:.0f}, client CPU {med[1]:.2f} s, servers {med[2]:.2f} s, "
              f"peak RSS {max(x[3] for x in rows):.0f} MiB; in transfer: client {med[4]:.2f} s, "
              f"servers {med[5]:.2f} s (medians)")


if __name__ == "__main__":
    main()
