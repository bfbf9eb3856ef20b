"""Swarm distribution time on the tbf rig, beside its bounds.

    sudo .venv/bin/python benchmarks/swarm_bench.py [--size-mib 64] [--rate-mbit 80] [--downloaders 4 8] [--runs 2]

Figures and how to read them: docs/TORRENT.md, "Swarm benchmark".

One seeder and N downloaders, each in its own network namespace on a bridge, every
host's uplink limited with `tc qdisc … tbf rate R` (tests/support/swarm_rig.py; needs
root). The seeder shares an F-byte file; the N `punch torrent-client`s start together.
Per scenario the table shows:
  last complete   seconds from the downloaders' start (process spawn) to the last `complete`
  transfer        the slowest client's `transfer_s` (metainfo in hand -> file in place)
  seeder alone    N·F/u_s: the seeder sending every copy itself (what the swarm must beat)
  Kumar–Ross      max(F/u_s, N·F/(u_s + Σu_i)) (downloads are not limited, so F/d_min = 0):
                  no scheme can do better (Kumar & Ross, 2006)
  ratio           last complete / Kumar–Ross
  traded          per downloader, pieces it got from other downloaders (all of them were
                  still downloading when they sent them unless they had completed earlier:
                  'early' counts only pieces from downloaders that completed after it)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from nat_harness import Punch, is_kind
from swarm_rig import BOOT_IP, BOOT_PORT, SwarmRig, swarm_unavailable_reason

MB = 1_000_000
START = 90.0


def node_args(boot_id: str) -> list[str]:
    return ["--listen-addr", "0.0.0.0", "--port", "4001", "--ephemeral",
            "--bootstrap", f"/ip4/{BOOT_IP}/tcp/{BOOT_PORT}/p2p/{boot_id}"]


def one_run(rig: SwarmRig, boot_id: str, info_hash: str, n: int, root: Path) -> dict[str, object]:
    clients = []
    t0 = time.monotonic()
    for i in range(1, n + 1):
        dest = root / f"dl{i}"
        dest.mkdir(parents=True)
        clients.append(Punch(rig, f"h{i}", f"c{i}", ["torrent-client", *node_args(boot_id), "--info-hash", info_hash,
                                                     "--download-dir", str(dest), "--timeout", "120"]))
    ids = {c.peer_id: c for c in clients}
    done = {c.name: c.wait_for(is_kind("complete"), 600, "complete") for c in clients}
    last = max(e["_t"] for e in done.values()) - t0
    traded, early = [], []
    for c in clients:
        e = done[c.name]
        traded.append(sum(k for p, k in e["from_peers"].items() if p in ids))
        early.append(sum(k for p, k in e["from_peers"].items()
                         if p in ids and done[ids[p].name]["_t"] > e["_t"]))
    out = {"last": last, "transfer": max(float(e["transfer_s"]) for e in done.values()),
           "traded": traded, "early": early}
    for c in clients:
        c.stop()
    return out


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind the rig's `with`: processes killed, namespaces deleted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--rate-mbit", type=float, default=80.0)
    ap.add_argument("--downloaders", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    reason = swarm_unavailable_reason()
    if reason:
        print(f"swarm rig unavailable: {reason}", file=sys.stderr)
        return 2
    size = args.size_mib * 1024 * 1024
    u = args.rate_mbit * 1e6 / 8  # bytes/s per uplink
    rows = []
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        root = Path(os.environ.get("SWARM_BENCH_DIR") or tmp)
        with SwarmRig(prefix=f"pb{os.getpid() % 10000}_", hosts=1 + max(args.downloaders),
                      rate_mbit=args.rate_mbit, log_dir=root) as rig:
            boot = Punch(rig, "boot", "boot", ["server", "--listen-addr", "0.0.0.0", "--port", str(BOOT_PORT),
                                               "--data-dir", str(root / "boot")])
            share = root / "share"
            share.mkdir()
            (share / "swarm.bin").write_bytes(os.urandom(size))
            seeder = Punch(rig, "h0", "seeder", ["torrent-server", *node_args(boot.peer_id),
                                                 "--share-dir", str(share)])
            info_hash = str(seeder.wait_for(is_kind("shared"), START, "shared")["info_hash"])
            seeder.wait_for(is_kind("announced", info_hash=info_hash), START, "announced")
            for n in args.downloaders:
                runs = [one_run(rig, boot.peer_id, info_hash, n, root / f"n{n}r{r}") for r in range(args.runs)]
                alone = n * size / u
                kr = max(size / u, n * size / (u + n * u))
                lasts = [float(r["last"]) for r in runs]  # type: ignore[arg-type]
                rows.append((n, lasts, [float(r["transfer"]) for r in runs], alone, kr, runs))  # type: ignore[arg-type]
    print(f"\nswarm: 1 seeder + N downloaders, {args.size_mib} MiB, every uplink {u / MB:.1f} MB/s (tc tbf), "
          f"{args.runs} run(s) each\n")
    print(f"{'N':>3} {'last complete s':>18} {'transfer s':>12} {'seeder alone s':>15} {'Kumar-Ross s':>13} "
          f"{'ratio':>6}  traded (early) per downloader")
    for n, lasts, transfers, alone, kr, runs in rows:
        med = statistics.median(lasts)
        spread = f"{min(lasts):.1f}-{max(lasts):.1f}"
        traded = "; ".join(", ".join(f"{t}({e})" for t, e in zip(r["traded"], r["early"], strict=True))  # type: ignore[call-overload]
                           for r in runs)
        print(f"{n:>3} {med:>8.1f} ({spread:>9}) {statistics.median(transfers):>12.1f} {alone:>15.1f} {kr:>13.1f} "
              f"{med / kr:>6.2f}  {traded}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
