"""DHT at scale: N separate `punch` processes on loopback, measured from outside.

For each N: seconds until every node is up and bootstrapped; connections and RSS per
node (after start-up and after the lookups); provider-lookup latency p50/p95/p99,
success and hops over random provide/find pairs (provider A announces a fresh key,
then a different node B looks it up; latency is timed inside B). The baseline, measured
in the same run, is a libp2p ping between two nodes over an open connection (the floor of
one DHT hop), plus the controller's own request/reply time over a node's stdin/stdout.
Each node is driven through its NodeAPI (`child.api`, a RemoteNode over its pipes):
`dht_provide`, `dht_find_providers`, `health`, `dial` + `ping`.

    .venv/bin/python benchmarks/dht_scale.py                 # N = 25 50 100 200
    .venv/bin/python benchmarks/dht_scale.py --nodes 25 --pairs 50 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import psutil
import trio

from punch_net.api import LookupStep, ProviderLookup
from punch_net.ops import wire
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_testnet.main import Child, Testnet

QUIET_CPU_PCT = 0.5  # per node, % of a core: "the network is quiet again"
QUIET_MAX_WAIT = 60.0
TARGETS = "targets: up <= 60 s @200; conns <= 60; success 100 %; p50 <= 100 ms; p99 <= 1 s; RSS <= 60 MB"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    """ctrl+c / SIGTERM: stop the measurement; Testnet.run then stops every node."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            raise SystemExit(130)


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def uss_mb(pid: int | None) -> float | None:
    """Private memory of a process (what forking from a preloaded zygote does not share)."""
    try:
        return float(psutil.Process(pid).memory_full_info().uss) / 2**20
    except Exception:
        return None


async def idle_cpu_pct(pids: list[int | None], window: float) -> float | None:
    """Average CPU per node (% of one core) over `window` seconds with nothing asked of them."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except Exception:
            continue

    def used() -> list[float]:
        out = []
        for proc in procs:
            try:
                t = proc.cpu_times()
                out.append(t.user + t.system)
            except Exception:
                out.append(float("nan"))
        return out

    if not procs or window <= 0:
        return None
    before, start = used(), time.monotonic()
    await trio.sleep(window)
    after, elapsed = used(), time.monotonic() - start
    deltas = [b - a for a, b in zip(before, after, strict=True) if b == b and a == a]
    return round(100 * statistics.fmean(deltas) / elapsed, 2) if deltas else None


def cpu_seconds(pids: list[int | None]) -> float:
    """CPU time (user + system) all these processes have used so far."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except Exception:
            continue
    return total


def tcp_per_pid(pids: set[int]) -> dict[int, int]:
    """Established TCP connections each of these processes holds, seen from outside (one
    `ss` call; the nodes are not asked, so sampling adds no work to them)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True,
                         timeout=20).stdout
    counts: dict[int, int] = {}
    for line in out.splitlines():
        for pid in {int(m) for m in re.findall(r"pid=(\d+)", line)} & pids:
            counts[pid] = counts.get(pid, 0) + 1
    return counts


async def sample_conn_peak(pids: list[int | None], peak: list[int], interval: float = 2.0) -> None:
    """Keep peak[0] = the most TCP connections any node held at one sample, until cancelled.
    The connection target is about every moment, not just the two polls the table shows
    (a burst of provides took single nodes of a 100-node testnet to 60-83 for seconds)."""
    wanted = {p for p in pids if p is not None}
    if shutil.which("ss") is None:
        return
    while True:
        counts = await trio.to_thread.run_sync(tcp_per_pid, wanted)
        peak[0] = max(peak[0], max(counts.values(), default=0))
        await trio.sleep(interval)


def trace_summary(traced: list[ProviderLookup]) -> dict[str, Any]:
    """Where the lookups' time went, from their per-query steps (`--trace`)."""
    steps: list[LookupStep] = [s for r in traced for s in r.steps or []]
    out: dict[str, Any] = {"queries": len(steps), "lookups": len(traced)}
    for label, group in (("connected", [s for s in steps if s.connected]),
                         ("dialed", [s for s in steps if not s.connected])):
        opens = [s.open_ms for s in group]
        rpcs = [s.rpc_ms for s in group if s.rpc_ms is not None]
        out[label] = {"n": len(group), "errors": sum(bool(s.error) for s in group),
                      "open_p50": pct(opens, 50), "open_p90": pct(opens, 90), "open_max": max(opens, default=None),
                      "rpc_p50": pct(rpcs, 50), "rpc_p90": pct(rpcs, 90), "rpc_max": max(rpcs, default=None)}
    lag = [r.lag_total_ms or 0.0 for r in traced]
    out["lag_total_p50"], out["lag_total_p90"] = pct(lag, 50), pct(lag, 90)
    return out


async def measure(n: int, pairs: int, settle: float, seed: int, preload: bool, count: int,
                  idle_window: float = 20.0, trace: str | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    net = Testnet(n, preload=preload)
    row: dict[str, Any] = {"nodes": n}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
        t0 = time.monotonic()
        await nursery.start(net.run)
        row["up_s"] = round(await net.wait_all_up(timeout=60 + 3 * n), 1)
        progress(f"N={n}: all up in {row['up_s']} s")
        row["launch_overhead_s"] = round(net.started_at - t0, 2)
        await trio.sleep(settle)
        stats = await net.poll_health(timeout=20)
        row["polled"] = len(stats)
        conns = [s.connections for s in stats]
        rss = [s.rss_bytes / 2**20 for s in stats]
        row["conns_avg"] = round(statistics.fmean(conns), 1)
        row["conns_max"] = max(conns)
        row["dht_avg"] = round(statistics.fmean(s.routing_table_size for s in stats), 1)
        row["rss_avg_mb"] = round(statistics.fmean(rss), 1)
        row["rss_max_mb"] = round(max(rss), 1)
        uss = [u for u in (uss_mb(c.pid) for c in net.children) if u is not None]
        row["uss_avg_mb"] = round(statistics.fmean(uss), 1) if uss else None
        row["idle_cpu_pct"] = await idle_cpu_pct([c.pid for c in net.children], idle_window)

        # Baseline: one request/response over an open connection (controller -> node).
        rtts = []
        for child in rng.sample(net.children, min(20, n)):
            start = time.perf_counter()
            with trio.fail_after(20):
                await child.api.health()
            rtts.append((time.perf_counter() - start) * 1000)
        row["baseline_rr_ms"] = round(statistics.median(rtts), 1)
        # Baseline: one libp2p ping between two nodes on an open connection (one DHT hop's floor).
        pings = []
        for _ in range(20):
            a, b = rng.sample(net.children, 2)
            with trio.fail_after(30):
                await a.api.dial(b.dial_addr)  # connected already, or now
                await a.api.ping(b.peer_id)  # the first opens the ping stream
                pings.append(await a.api.ping(b.peer_id) * 1000)
        row["ping_ms"] = round(statistics.median(pings), 1)

        latencies: list[float] = []
        hops: list[int] = []
        ok = 0
        provide_ms: list[float] = []
        plan = []
        for i in range(pairs):
            a, b = rng.sample(net.children, 2)
            plan.append((a, b, f"bench-{n}-{seed}-{i}"))
        limiter = trio.CapacityLimiter(8)  # provides overlap; lookups below run one at a time

        async def provide(a: Child, key: str) -> None:
            async with limiter:
                with trio.fail_after(40):
                    res = await a.api.dht_provide(key)
                provide_ms.append(res.ms)

        peak = [0]
        sampler = trio.CancelScope()

        async def sample() -> None:
            with sampler:
                await sample_conn_peak([c.pid for c in net.children], peak)

        nursery.start_soon(sample)
        async with trio.open_nursery() as prov:
            for a, _b, key in plan:
                prov.start_soon(provide, a, key)
        # The provides (a closest-peers walk and 20 ADD_PROVIDER dials each) leave the network
        # busy with handshakes, identify and pruning for a while; lookups are timed once the
        # nodes are quiet again, so they measure the lookup rather than that aftermath.
        quiet_start = time.monotonic()
        while time.monotonic() - quiet_start < QUIET_MAX_WAIT:
            busy = await idle_cpu_pct([c.pid for c in net.children], 2.0)
            if busy is None or busy <= QUIET_CPU_PCT:
                break
        row["quiet_wait_s"] = round(time.monotonic() - quiet_start, 1)
        sampler.cancel()  # `ss -p` reads every process's fds: not while lookups are timed
        progress(f"N={n}: {pairs} keys provided (p50 {pct(provide_ms, 50):.0f} ms); "
                 f"quiet after {row['quiet_wait_s']} s; looking them up")
        traced: list[ProviderLookup] = []
        trace_lines: list[dict[str, Any]] = []
        pids = [c.pid for c in net.children]
        cpu_before, lookups_start = cpu_seconds(pids), time.monotonic()
        for a, b, key in plan:  # one lookup at a time: latency without self-inflicted contention
            with trio.fail_after(40):
                res = await b.api.dht_find_providers(key, count=count, timeout=10, trace=trace is not None)
            found = a.peer_id in res.providers
            if found:
                ok += 1
                latencies.append(res.ms)
                hops.append(res.hops or 0)
            if trace is not None:
                traced.append(res)
                lookup = wire.unstructure(res, ProviderLookup)
                assert isinstance(lookup, dict)
                trace_lines.append({**lookup, "looker": b.peer_id, "provider": a.peer_id, "found": found})
        elapsed = time.monotonic() - lookups_start
        # What the whole network burnt while one lookup at a time ran: cores busy (of 2).
        row["lookup_cores"] = round((cpu_seconds(pids) - cpu_before) / elapsed, 2)
        if shutil.which("ss"):  # and once right after them
            counts = tcp_per_pid({p for p in pids if p is not None})
            row["conns_peak"] = max(peak[0], max(counts.values(), default=0))
        if trace is not None:
            row["trace"] = trace_summary(traced)
            with open(trace, "a") as out:
                out.write(json.dumps({"nodes": n, "lookups": trace_lines, "summary": row["trace"]}) + "\n")
            progress(f"N={n}: trace {json.dumps(row['trace'])}")
        row["provide_p50_ms"] = round(pct(provide_ms, 50), 1)
        row["success"] = f"{ok}/{pairs}"
        row["success_pct"] = round(100 * ok / pairs, 1)
        row["p50_ms"] = round(pct(latencies, 50), 1)
        row["p95_ms"] = round(pct(latencies, 95), 1)
        row["p99_ms"] = round(pct(latencies, 99), 1)
        row["hops_avg"] = round(statistics.fmean(hops), 2) if hops else None
        row["hops_max"] = max(hops) if hops else None
        stats = await net.poll_health(timeout=20)
        conns = [s.connections for s in stats]
        row["conns_after_avg"] = round(statistics.fmean(conns), 1)
        row["conns_after_max"] = max(conns)
        row["pruned_total"] = sum(s.connmgr.pruned for s in stats)
        nursery.cancel_scope.cancel()
    row["load_avg_1m"] = round(os.getloadavg()[0], 1)  # other work on the machine skews every figure
    row["left_running"] = sum(1 for c in net.children if c.proc is not None and c.proc.returncode is None)
    return row


COLUMNS = [
    ("nodes", "N"), ("up_s", "up s"), ("conns_avg", "conn avg"), ("conns_max", "conn max"),
    ("conns_after_max", "conn max*"), ("conns_peak", "conn peak"), ("dht_avg", "dht avg"), ("rss_avg_mb", "RSS MB"),
    ("uss_avg_mb", "USS MB"),
    ("success", "found"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"),
    ("hops_avg", "hops"), ("provide_p50_ms", "provide p50"),
    ("quiet_wait_s", "quiet s"), ("ping_ms", "ping ms"), ("baseline_rr_ms", "ctl ms"),
    ("idle_cpu_pct", "idle %cpu"), ("lookup_cores", "lookup cores"), ("load_avg_1m", "load"),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    widths = [max(len(title), *(len(str(r.get(key))) for r in rows)) for key, title in COLUMNS]
    print("  ".join(t.rjust(w) for (_, t), w in zip(COLUMNS, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(k)).rjust(w) for (k, _), w in zip(COLUMNS, widths, strict=True)))
    print("conn max* = after the lookups; conn peak = most TCP connections one node held in any 2 s sample")
    print("during the provides and the quiet wait, or right after the lookups (counted with ss from outside;")
    print("dials in progress and a peer's second connection count too);")
    print("USS = private memory per node (RSS counts pages shared with the")
    print("fork server); baselines in the same run: ping ms = one libp2p ping between two nodes on an open")
    print("connection (a DHT hop's floor), ctl ms = one control request/reply to a node over its stdin/stdout;")
    print("idle %cpu = CPU per node (% of one core) over --idle-window s after start-up, before any lookup;")
    print("lookup cores = CPU all nodes used while the lookups ran, in cores (this machine has 2);")
    print(f"quiet s = wait after the provides until nodes average <= {QUIET_CPU_PCT} % CPU (max {QUIET_MAX_WAIT:g} s)")
    print(TARGETS)


def main() -> int:
    quiet_libp2p_logging()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[25, 50, 100, 200])
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--settle", type=float, default=5.0, help="seconds after all up before measuring")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--idle-window", type=float, default=20.0, help="seconds of idle CPU measurement per N")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-preload", action="store_true", help="fresh interpreter per node (no fork server)")
    p.add_argument("--count", type=int, default=1,
                   help="providers a lookup waits for (1: time to the first provider, like findprovs -n 1)")
    p.add_argument("--trace", metavar="FILE",
                   help="lookups report each query's timing (peer connected?, stream open/dial, request); "
                        "appends them to FILE (JSON lines) and prints a summary")
    args = p.parse_args()
    rows = []
    for n in args.nodes:
        row = trio.run(measure, n, args.pairs, args.settle, args.seed, not args.no_preload, args.count,
                       args.idle_window, args.trace)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"N={n}: {row}", file=sys.stderr, flush=True)
    if not args.json:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
