"""Attack benchmark (issue 14): for each attack, the honest peer's success rate and latency
during the attack beside the same figures without it, and the victim's RSS and open fds.

    .venv/bin/python benchmarks/attack_bench.py                 # all three, prints a table
    .venv/bin/python benchmarks/attack_bench.py kad flood       # some of them
    BENCH_ATTACK_SECONDS=20 .venv/bin/python benchmarks/attack_bench.py

Three processes per attack, all on 127.0.0.1: the victim (a `server` node with default
[limits] and the usual soft limit of 1,024 open files, a mode of this file), the attacker
(another mode of this file, dialing from 127.0.0.2 like tests/adversarial) and the honest
peer (this process, from 127.0.0.1):

- kad:  10 throwaway identities × 4 silent /ipfs/kad/1.0.0 streams (reopened when reset);
        honest: FIND_NODE on a fresh stream.
- flood: 2,000 silent TCP connections (reopened when closed); honest: a fresh host each
        time: connect + FIND_NODE + echo.
- noread: 20 peers pipelining 1 MiB echo requests that never read a reply; honest: echo on
        a fresh command stream. RSS is also read 60 s after the attackers leave.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "support"))

SECONDS = float(os.environ.get("BENCH_ATTACK_SECONDS", "15"))
AFTER_SECONDS = float(os.environ.get("BENCH_AFTER_SECONDS", "60"))
ATTACKS = {
    "kad": "10 identities × 4 silent kad streams",
    "flood": "2,000 silent TCP connections",
    "noread": "20 non-reading peers, 1 MiB echo requests",
}
VICTIM_FDS = 1024
TARGET_SUCCESS = 0.99
TARGET_RSS_MIB = 200.0
TARGET_RSS_BACK_MIB = 20.0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# ------------------------------------------------------------------ child processes


async def serve() -> None:
    """The victim: the whole node a `punch server` runs, default limits."""
    from punch_net.config import NodeConfig
    from punch_net.p2p.helpers import quiet_libp2p_logging
    from punch_net.runtime import Runtime

    quiet_libp2p_logging()
    node = Runtime(NodeConfig(role="server", listen_addr="127.0.0.1", port=0, ephemeral=True, bootstrap=[])).node
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        print(node.listen_addrs()[0], flush=True)


async def attack(kind: str, addr: str) -> None:
    """The attacker, until killed (the parent bounds it in time)."""
    import attackers
    from punch_harness import peer_info_of

    from punch_net.p2p.helpers import quiet_libp2p_logging

    quiet_libp2p_logging()
    target = peer_info_of(addr)
    count = [0]
    async with trio.open_nursery() as nursery:
        if kind == "kad":
            await nursery.start(attackers.kad_attack, target, 10, 4, attackers.ATTACKER_IP, count)
        elif kind == "flood":
            port = int(addr.split("/tcp/")[1].split("/")[0])
            await nursery.start(attackers.silent_connections, port, 2000, attackers.ATTACKER_IP, "127.0.0.1", count)
        else:
            await nursery.start(attackers.non_reading_attack, target, 20, 1 << 20, attackers.ATTACKER_IP, count)
        print("ready", flush=True)
        while True:
            await trio.sleep(1)
            print(json.dumps({"count": count[0]}), flush=True)


def victim_fd_limit() -> None:
    """The victim gets the usual default soft limit of 1,024 open files (as a node started
    from a shell or a plain systemd unit would), not the bench's raised one."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(VICTIM_FDS, hard), hard))


def spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=victim_fd_limit if args[0] == "serve" else None)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start")
    return proc, line


def stop(proc: subprocess.Popen[str]) -> str:
    """Kill `proc`; what it printed since its first line."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    return proc.stdout.read() if proc.stdout else ""


def attacker_count(output: str) -> int:
    counts = [json.loads(line)["count"] for line in output.splitlines() if line.startswith("{")]
    return counts[-1] if counts else 0


# ------------------------------------------------------------------ the honest peer


async def honest_loop(kind: str, addr: str, seconds: float, pid: int) -> dict[str, Any]:
    """Honest requests back to back for `seconds`; victim RSS/fds sampled meanwhile."""
    import attackers
    from punch_harness import kad_find_node, libp2p_host, peer_info_of

    target = peer_info_of(addr)
    ok: list[float] = []
    failed = 0
    rss: list[float] = []
    fds: list[int] = []

    async def sample() -> None:
        while True:
            rss.append(attackers.rss_mib(pid))
            fds.append(attackers.open_fds(pid))
            await trio.sleep(0.5)

    async def once(host: Any) -> None:
        if kind == "kad":
            await kad_find_node(host, target.peer_id, timeout=5)
        elif kind == "noread":
            await attackers.honest_echo(host, target.peer_id, timeout=5)
        else:
            await kad_find_node(host, target.peer_id, timeout=5)
            await attackers.honest_echo(host, target.peer_id, timeout=5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        end = trio.current_time() + seconds
        async with libp2p_host() as steady:
            await steady.connect(target)
            while trio.current_time() < end:
                start = time.perf_counter()
                try:
                    if kind == "flood":  # a fresh connection (and handshake) every time
                        async with libp2p_host() as fresh:
                            with trio.fail_after(10):
                                await fresh.connect(target)
                            await once(fresh)
                    else:
                        await once(steady)
                    ok.append(time.perf_counter() - start)
                except Exception:
                    failed += 1
                    await trio.sleep(0.1)
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    total = len(ok) + failed
    return {
        "n": total, "success": len(ok) / total if total else 0.0,
        "p50_ms": statistics.median(ok) * 1000 if ok else float("nan"),
        "p95_ms": sorted(ok)[int(0.95 * (len(ok) - 1))] * 1000 if ok else float("nan"),
        "rss_max": max(rss) if rss else 0.0, "fds_max": max(fds) if fds else 0,
    }


async def run_attack(kind: str) -> dict[str, Any]:
    import attackers

    victim, addr = spawn("serve")
    try:
        await trio.sleep(1)
        baseline_rss = attackers.rss_mib(victim.pid)
        quiet = await honest_loop(kind, addr, SECONDS, victim.pid)
        attacker, _ = await trio.to_thread.run_sync(spawn, "attack", kind, addr)
        try:
            await trio.sleep(3)  # ramp-up: the attack is in full swing
            loud = await honest_loop(kind, addr, SECONDS, victim.pid)
        finally:
            opened = attacker_count(stop(attacker))
        result = {"kind": kind, "quiet": quiet, "attack": loud, "baseline_rss": baseline_rss, "opened": opened}
        if kind == "noread":
            await trio.sleep(AFTER_SECONDS)
            result["rss_after"] = attackers.rss_mib(victim.pid)
        return result
    finally:
        stop(victim)


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| attack | honest success (no attack → attack) | honest p50 / p95 ms (no attack → attack) "
            "| victim RSS MiB (baseline → max in attack) | victim open fds (max, no attack → attack) "
            "| attacker's streams / connections / requests opened | target |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        q, a = r["quiet"], r["attack"]
        target_ok = a["success"] >= TARGET_SUCCESS
        target = f"≥ 99 % honest success: {'met' if target_ok else 'MISSED'}"
        rss = f"{r['baseline_rss']:.0f} → {a['rss_max']:.0f}"
        if "rss_after" in r:
            back = r["rss_after"] - r["baseline_rss"]
            rss += f" (60 s after: {r['rss_after']:.0f})"
            mem_ok = a["rss_max"] <= TARGET_RSS_MIB and back <= TARGET_RSS_BACK_MIB
            target += f"; RSS ≤ 200, back within 20 MiB: {'met' if mem_ok else 'MISSED'}"
        rows.append(
            f"| {ATTACKS[r['kind']]} | {q['success']:.1%} of {q['n']} → {a['success']:.1%} of {a['n']} "
            f"| {q['p50_ms']:.1f} / {q['p95_ms']:.1f} → {a['p50_ms']:.1f} / {a['p95_ms']:.1f} "
            f"| {rss} | {q['fds_max']} → {a['fds_max']} | {r['opened']:,} | {target} |")
    return "\n".join(rows)


async def main(kinds: list[str]) -> None:
    results = []
    for kind in kinds:
        print(f"running {kind}: {ATTACKS[kind]} ({SECONDS:g} s quiet, {SECONDS:g} s under attack)", flush=True)
        results.append(await run_attack(kind))
        print(json.dumps(results[-1]), flush=True)
    print()
    print(table(results))


if __name__ == "__main__":
    raise_fd_limit()
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        trio.run(serve)
    elif len(sys.argv) > 1 and sys.argv[1] == "attack":
        trio.run(attack, sys.argv[2], sys.argv[3])
    else:
        chosen = sys.argv[1:] or list(ATTACKS)
        unknown = [k for k in chosen if k not in ATTACKS]
        if unknown:
            sys.exit(f"unknown attack {', '.join(unknown)} (have: {', '.join(ATTACKS)})")
        trio.run(main, chosen)
