"""Fixed costs of one `punch torrent-client --no-seed` download, as real processes on loopback.

    .venv/bin/python benchmarks/torrent_fixed_costs.py [--size-mib 128] [--runs 3]

Reports, median (min-max) over --runs:
  import      `python -m punch_net.cli --help` wall (interpreter, the CLI's imports, argparse)
  start->exit process start to exit, downloading from 1 and from 3 torrent servers
  1st piece   the first provider's `connected` event -> the first piece's bytes in NAME.part
              (polled every 2 ms: st_blocks > 0)
  done->exit  the `complete` event read on stdout -> the process reaped
A bootstrap `punch server` and three `punch torrent-server`s (hard links of one file) run
throughout; every client is `python -m punch_net.cli torrent-client ... --json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from punchproc import PunchProc, first_block_at

PY = sys.executable
MB = 1_000_000


def import_time(env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run([PY, "-m", "punch_net.cli", "--help"], env=env, check=True, stdout=subprocess.DEVNULL)
        out.append(time.monotonic() - t0)
    return out


def one_download(boot: str, info_hash: str, dest: Path, name: str, env: dict[str, str]) -> dict[str, float]:
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / (name + ".part")
    client = PunchProc("torrent-client", "--bootstrap", boot, "--info-hash", info_hash, "--download-dir", str(dest),
                  "--no-seed", "--timeout", "60", env=env)
    first_bytes = first_block_at(client, part)
    client.p.wait(300)
    exited = time.monotonic()
    client.reader.join(5)
    t_done, done = client.wait_timed("complete", timeout=1)
    boot_id = boot.rsplit("/", 1)[-1]
    conns = [t for t, e in client.events if e.get("event") == "connected" and e.get("peer_id") != boot_id]
    out = {"wall": exited - client.started, "done_exit": exited - t_done, "transfer_s": float(done["transfer_s"])}
    if first_bytes and conns:
        out["first_piece"] = first_bytes - min(conns)
    (dest / name).unlink()
    return out


def fmt(values: list[float], unit: str = "s") -> str:
    if not values:
        return "-"
    v = sorted(values)
    return f"{statistics.median(v):.3f} {unit} ({v[0]:.3f}-{v[-1]:.3f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="punch-fixed-costs-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "PUNCH_DATA_DIR": str(root / "data")}
        imports = import_time(env, args.runs + 2)
        shares = [root / f"share{i}" for i in range(3)]
        for s in shares:
            s.mkdir()
        with (shares[0] / "f.bin").open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        for s in shares[1:]:
            os.link(shares[0] / "f.bin", s / "f.bin")
        procs: list[PunchProc] = []
        results: dict[int, list[dict[str, float]]] = {}
        try:
            boot = PunchProc("server", env=env)
            procs.append(boot)
            boot_addr = boot.wait("listening")["addrs"][0]
            info_hash = ""
            for n, share in enumerate(shares, 1):
                srv = PunchProc("torrent-server", "--bootstrap", boot_addr, "--share-dir", str(share), env=env)
                procs.append(srv)
                info_hash = srv.wait("shared", timeout=300)["info_hash"]
                srv.wait("announced", timeout=60)
                if n in (1, 3):
                    results[n] = [one_download(boot_addr, info_hash, root / f"dl{n}", "f.bin", env)
                                  for _ in range(args.runs)]
        finally:
            for p in procs:
                p.stop()
    print(f"\nFixed costs, {args.size_mib} MiB, loopback, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"median (min-max) of {args.runs}")
    print(f"{'import (interpreter + CLI imports)':<36} {fmt(imports)}")
    for n, rows in results.items():
        walls = [r["wall"] for r in rows]
        print(f"{f'start->exit, {n} server(s)':<36} {fmt(walls)}  = {size / statistics.median(walls) / MB:.0f} MB/s;"
              f" transfer_s {fmt([r['transfer_s'] for r in rows])}")
        firsts = [r["first_piece"] for r in rows if "first_piece" in r]
        print(f"{f'  first piece after handshake, {n}':<36} {fmt(firsts)}")
        print(f"{f'  complete -> exit, {n}':<36} {fmt([r['done_exit'] for r in rows])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
