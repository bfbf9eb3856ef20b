"""Attack benchmark (issue 14): for each attack, the honest peer's success rate and latency
during the attack beside the same figures without it, and the victim's RSS and open fds.

    .venv/bin/python benchmarks/attack_bench.py                 # all of them, prints a table
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

Three more rows, each with its own baseline from the same run:

- bootstrap-restart: `punch server` (a data dir, a fixed port) and 3 `punch listener`s, real
        processes; the server is SIGKILLed and restarted 3 s later on the same port with the
        same data dir. Per listener: seconds from the restarted server's `listening` event to
        the listener's `bootstrapped` event (target ≤ 5 s), and its `bootstrap_retry` events
        while the server was down. Honest: `punch dialer --count 1` requests (via the server)
        before the crash and after the restart.
- log-amplification: a `punch listener --json` gets echo requests from one attacker peer
        (from 127.0.0.2, replies read): first small ones (the baseline), then ~0.95 MiB ones
        (under the 1 MiB frame cap). Reported: bytes of --json output per attacker message
        and per MiB of attacker traffic (target < 1 KiB a message). Honest: echo.
- relay-concurrent: benchmarks/nat_bench.py's `relay` scenario on the NAT rig (root,
        netns, nftables): 20 dialers behind no NAT reach a listener behind NAT A through the
        relay, one at a time (baseline) and 5 at once (4 waves); connections that work
        (a reply, and not broken) out of 20. Skipped, with the reason, where the rig cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
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
    "bootstrap-restart": "bootstrap server kill -9, back 3 s later (3 listeners)",
    "log-amplification": "~1 MiB echo requests to a `--json` listener",
    "relay-concurrent": "5 dialers at once through one relay (NAT rig)",
}
BASELINES = {  # what the "no attack" figures of the newer rows are
    "bootstrap-restart": "before the crash → after the restart",
    "log-amplification": "small messages → ~1 MiB messages",
    "relay-concurrent": "one dialer at a time → 5 at once",
}
VICTIM_FDS = 1024
TARGET_SUCCESS = 0.99
TARGET_RSS_MIB = 200.0
TARGET_RSS_BACK_MIB = 20.0
TARGET_REJOIN_S = 5.0
TARGET_LOG_PER_MESSAGE = 1024
LISTENERS = 3
DIALS = int(os.environ.get("BENCH_DIALS", "3"))
RELAY_TRIALS = 20
BIG_ARGS = {"text": "x" * (900 << 10), "blob": ["y" * 500] * 100}  # ~0.95 MiB: under the 1 MiB frame cap
SMALL_ARGS = {"text": "hello"}
SMALL_PAUSE = 0.025  # the baseline's small messages at ~40/s, about the rate the ~1 MiB ones reach


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
        elif kind == "noread":
            await nursery.start(attackers.non_reading_attack, target, 20, 1 << 20, attackers.ATTACKER_IP, count)
        else:  # "big" / "small": echo requests, replies read (and dropped)
            big = kind == "big"
            await nursery.start(send_messages, target, BIG_ARGS if big else SMALL_ARGS, 0.0 if big else SMALL_PAUSE,
                                count)
        print("ready", flush=True)
        while True:
            await trio.sleep(1)
            print(json.dumps({"count": count[0], "bytes": count[1] if len(count) > 1 else 0}), flush=True)


async def send_messages(target: Any, args: dict[str, Any], pause: float, count: list[int], *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Echo requests on one command stream, `pause` s apart (0: as fast as the victim reads);
    `count` = [messages, bytes] sent. The replies are read: not the non-reading attack, only
    the log is at stake."""
    import attackers

    from punch_net.messaging import codec

    count[:] = [0, 0]
    async with attackers.attacker_host() as host:
        await host.connect(target)
        stream = await host.new_stream(target.peer_id, [codec.PROTOCOL_ID])

        async def drain() -> None:
            while await stream.read(1 << 16):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            task_status.started()
            while True:
                frame = codec.encode_json({"id": f"atk-{count[0]}", "command": "echo", "args": args,
                                           "from": str(host.get_id())})
                await stream.write(frame)
                count[0] += 1
                count[1] += len(frame)
                await trio.sleep(pause)


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


def attacker_count(output: str, key: str = "count") -> int:
    counts = [json.loads(line)[key] for line in output.splitlines() if line.startswith("{")]
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
        elif kind == "flood":
            await kad_find_node(host, target.peer_id, timeout=5)
            await attackers.honest_echo(host, target.peer_id, timeout=5)
        else:
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


# ------------------------------------------------------------------ recovery and amplification rows


def log_bytes(events: list[dict[str, Any]]) -> int:
    """Bytes these events took on stdout: the CLI writes `json.dumps(event)` + newline."""
    return sum(len(json.dumps({k: v for k, v in e.items() if k != "_t"}, default=str)) + 1 for e in events)


def timed_dial(factory: Any, server_addr: str, ns: str) -> float | None:
    """One `punch dialer --count 1` via the server: seconds from its `listening` to the
    reply, or None if it got no reply."""
    dialer = factory.start("dialer", "--bootstrap", server_addr, "--namespace", ns, "--count", "1",
                           "--timeout", "30", name="dialer")
    try:
        code = dialer.wait_exit(90)
    except Exception:
        dialer.kill()
        return None
    up = dialer.find_events("listening")
    reply = dialer.find_events("reply", lambda e: bool(e.get("ok")))
    if code != 0 or not up or not reply:
        return None
    return float(reply[0]["_t"] - up[0]["_t"])


def dial_stats(times: list[float | None]) -> dict[str, Any]:
    ok = sorted(t for t in times if t is not None)
    return {"n": len(times), "success": len(ok) / len(times) if times else 0.0,
            "p50_ms": statistics.median(ok) * 1000 if ok else float("nan"),
            "p95_ms": ok[int(0.95 * (len(ok) - 1))] * 1000 if ok else float("nan")}


def run_bootstrap_restart() -> dict[str, Any]:
    """SIGKILL the bootstrap server, restart it 3 s later (same port, same data dir)."""
    import attackers
    from punch_harness import PunchFactory, free_port

    ns = "bench-restart"
    with tempfile.TemporaryDirectory(prefix="attack-bench-") as tmp:
        factory = PunchFactory(Path(tmp))
        try:
            port = free_port()
            data = Path(tmp) / "server-data"
            server = factory.start("server", "--port", str(port), "--data-dir", str(data), name="server")
            server_id = server.peer_id
            listeners = [factory.start("listener", "--bootstrap", server.addr, "--namespace", ns,
                                       "--data-dir", str(Path(tmp) / f"l{i}"), name=f"l{i}")
                         for i in range(LISTENERS)]
            for lis in listeners:
                lis.wait_event("registered", 120)
            time.sleep(1)
            baseline_rss, fds_before = attackers.rss_mib(server.pid), attackers.open_fds(server.pid)
            before = [timed_dial(factory, server.addr, ns) for _ in range(DIALS)]
            marks = [lis.mark() for lis in listeners]
            server.kill()  # a crash
            killed = time.monotonic()
            for lis, mark in zip(listeners, marks, strict=True):
                lis.wait_event("disconnected", 30, lambda e: e.get("peer_id") == server_id, after=mark)
            time.sleep(max(0.0, killed + 3.0 - time.monotonic()))
            back = factory.start("server", "--port", str(port), "--data-dir", str(data), name="server-again")
            back_at = back.listening(120)["_t"]  # the restarted server accepts from here on
            rejoin: list[float | None] = []
            retries: list[int] = []
            for lis, mark in zip(listeners, marks, strict=True):
                since = list(lis.events[mark:])  # a copy: the reader thread appends
                retries.append(sum(1 for e in since if e.get("event") == "bootstrap_retry" and e["_t"] < back_at))
                try:
                    again = lis.wait_event("bootstrapped", 60, after=mark)
                    rejoin.append(float(again["_t"] - back_at))
                except AssertionError:
                    rejoin.append(None)
            for lis, mark in zip(listeners, marks, strict=True):  # registered again before the dials
                try:
                    lis.wait_event("registered", 30, after=mark)
                except AssertionError:
                    pass
            after = [timed_dial(factory, back.addr, ns) for _ in range(DIALS)]
            quiet = {**dial_stats(before), "rss_max": baseline_rss, "fds_max": fds_before}
            loud = {**dial_stats(after), "rss_max": attackers.rss_mib(back.pid),
                    "fds_max": attackers.open_fds(back.pid)}
        finally:
            factory.close()
    met = all(t is not None and t <= TARGET_REJOIN_S for t in rejoin)
    took = " / ".join("never" if t is None else f"{t:.2f}" for t in rejoin)
    return {"kind": "bootstrap-restart", "quiet": quiet, "attack": loud, "baseline_rss": baseline_rss,
            "opened": f"{sum(retries)} bootstrap_retry while down ({' / '.join(map(str, retries))})",
            "rejoin_s": rejoin, "retries": retries,
            "target": f"rejoined {took} s after the restart; ≤ 5 s: {'met' if met else 'MISSED'}"}


async def run_log_amplification() -> dict[str, Any]:
    """Small, then ~1 MiB echo requests from one peer to a `--json` listener."""
    import attackers
    from punch_harness import PunchFactory

    with tempfile.TemporaryDirectory(prefix="attack-bench-") as tmp:
        factory = PunchFactory(Path(tmp))
        try:
            server = factory.start("server", name="server")
            listener = factory.start("listener", "--bootstrap", server.addr, "--namespace", "bench-log",
                                     name="listener")
            await listener.aevent("registered", 120)
            await trio.sleep(1)
            baseline_rss = attackers.rss_mib(listener.pid)
            phases: dict[str, dict[str, Any]] = {}
            for size in ("small", "big"):
                attacker, _ = await trio.to_thread.run_sync(spawn, "attack", size, listener.addr)
                mark = listener.mark()
                try:
                    await trio.sleep(3)
                    honest = await honest_loop("log-amplification", listener.addr, SECONDS, listener.pid)
                finally:
                    out = stop(attacker)
                await trio.sleep(2)  # the last events reach our reader
                events = list(listener.events[mark:])  # a copy: the reader thread appends
                mine = [e for e in events if str(e.get("id", "")).startswith("atk-")]
                received = [e for e in mine if e.get("event") == "message_received"]
                phases[size] = {"honest": honest, "sent": attacker_count(out), "received": len(received),
                                "received_bytes": sum(int(e.get("size", 0)) for e in received),
                                "log_bytes": log_bytes(events), "attacker_log_bytes": log_bytes(mine),
                                "longest_line": max((log_bytes([e]) for e in mine), default=0)}
        finally:
            factory.close()
    small, big = phases["small"], phases["big"]

    def per_message(p: dict[str, Any]) -> float:
        return p["attacker_log_bytes"] / p["received"] if p["received"] else float("nan")

    mib = big["received_bytes"] / (1 << 20)  # the frames' sizes, as the listener's events state them
    per_mib = big["attacker_log_bytes"] / mib if mib else float("nan")
    met = big["received"] > 0 and per_message(big) < TARGET_LOG_PER_MESSAGE
    return {"kind": "log-amplification", "quiet": small["honest"], "attack": big["honest"],
            "baseline_rss": baseline_rss, "phases": phases,
            "opened": f"{big['received']:,} messages received, {mib:,.0f} MiB",
            "target": (f"--json log per attacker message: {per_message(small):.0f} B small → {per_message(big):.0f} B "
                       f"big (longest line {big['longest_line']} B), {per_mib / 1024:.2f} KiB per MiB received; "
                       f"< 1 KiB a message: {'met' if met else 'MISSED'}")}


def run_relay_concurrent() -> dict[str, Any]:
    """nat_bench.py's relay scenario, one dialer at a time and then 5 at once."""
    from rig import rig_unavailable_reason

    reason = rig_unavailable_reason()
    if reason:
        return {"kind": "relay-concurrent", "skipped": reason}
    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="attack-bench-") as tmp:
        for parallel in (1, 5):
            out = Path(tmp) / f"nat-{parallel}.json"
            res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "nat_bench.py"), "--only", "relay",
                                  "--trials", str(RELAY_TRIALS), "--parallel", str(parallel), "--json", str(out)],
                                 capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
            if res.returncode != 0 or not out.exists():
                return {"kind": "relay-concurrent",
                        "skipped": f"nat_bench.py exited {res.returncode}: {res.stderr.strip()[-200:]}"}
            runs[parallel] = json.loads(out.read_text())[0]

    def figures(s: dict[str, Any]) -> dict[str, Any]:
        working = s["connected"] - s["broken"]  # a reply came, and no failed request / second relayed conn
        ms = [None if v is None else v * 1000 for v in (s["reply_p50"], s["reply_p95"])]
        return {"n": s["trials"], "success": working / s["trials"] if s["trials"] else 0.0, "working": working,
                "p50_ms": ms[0] if ms[0] is not None else float("nan"),
                "p95_ms": ms[1] if ms[1] is not None else float("nan"), "rss_max": float("nan"), "fds_max": "—"}

    one, five = figures(runs[1]), figures(runs[5])
    met = five["working"] == RELAY_TRIALS
    return {"kind": "relay-concurrent", "quiet": one, "attack": five, "baseline_rss": float("nan"), "runs": runs,
            "opened": f"{RELAY_TRIALS // 5} waves × 5 dialers",
            "target": (f"working: {one['working']}/{one['n']} → {five['working']}/{five['n']} "
                       f"(broken {runs[1]['broken']} → {runs[5]['broken']}); 20/20 at 5 at once: "
                       f"{'met' if met else 'MISSED'}")}


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| attack | honest success (no attack → attack) | honest p50 / p95 ms (no attack → attack) "
            "| victim RSS MiB (baseline → max in attack) | victim open fds (max, no attack → attack) "
            "| attacker's streams / connections / requests opened | target |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        name = ATTACKS[r["kind"]] + (f" ({BASELINES[r['kind']]})" if r["kind"] in BASELINES else "")
        if "skipped" in r:
            rows.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        q, a = r["quiet"], r["attack"]
        if "target" in r:  # the newer rows state their own target
            target = r["target"]
        else:
            target_ok = a["success"] >= TARGET_SUCCESS
            target = f"≥ 99 % honest success: {'met' if target_ok else 'MISSED'}"
        rss = "—" if r["baseline_rss"] != r["baseline_rss"] else f"{r['baseline_rss']:.0f} → {a['rss_max']:.0f}"
        if "rss_after" in r:
            back = r["rss_after"] - r["baseline_rss"]
            rss += f" (60 s after: {r['rss_after']:.0f})"
            mem_ok = a["rss_max"] <= TARGET_RSS_MIB and back <= TARGET_RSS_BACK_MIB
            target += f"; RSS ≤ 200, back within 20 MiB: {'met' if mem_ok else 'MISSED'}"
        fds = "—" if q["fds_max"] == "—" else f"{q['fds_max']} → {a['fds_max']}"
        opened = r["opened"] if isinstance(r["opened"], str) else f"{r['opened']:,}"
        rows.append(
            f"| {name} | {q['success']:.1%} of {q['n']} → {a['success']:.1%} of {a['n']} "
            f"| {q['p50_ms']:.1f} / {q['p95_ms']:.1f} → {a['p50_ms']:.1f} / {a['p95_ms']:.1f} "
            f"| {rss} | {fds} | {opened} | {target} |")
    return "\n".join(rows)


async def run_one(kind: str) -> dict[str, Any]:
    if kind == "bootstrap-restart":
        return await trio.to_thread.run_sync(run_bootstrap_restart)
    if kind == "log-amplification":
        return await run_log_amplification()
    if kind == "relay-concurrent":
        return await trio.to_thread.run_sync(run_relay_concurrent)
    return await run_attack(kind)


async def main(kinds: list[str]) -> None:
    results = []
    load_at_start = os.getloadavg()
    for kind in kinds:
        timing = "" if kind in BASELINES else f" ({SECONDS:g} s quiet, {SECONDS:g} s under attack)"
        print(f"running {kind}: {ATTACKS[kind]}{timing}", flush=True)
        results.append(await run_one(kind))
        print(json.dumps(results[-1]), flush=True)
    print()
    print(table(results))
    loads = [" / ".join(f"{x:.2f}" for x in load) for load in (load_at_start, os.getloadavg())]
    print(f"\nload average (1/5/15 min): {loads[0]} at the start, {loads[1]} at the end, on {os.cpu_count()} cores")


def parse_args() -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("attacks", nargs="*", metavar="ATTACK",
                    help=f"which to run (default: all): {', '.join(ATTACKS)}")
    chosen: list[str] = ap.parse_args().attacks or list(ATTACKS)
    unknown = [k for k in chosen if k not in ATTACKS]
    if unknown:
        ap.exit(2, f"unknown attack {', '.join(unknown)} (have: {', '.join(ATTACKS)})\n")
    return chosen


if __name__ == "__main__":
    raise_fd_limit()
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        trio.run(serve)
    elif len(sys.argv) > 1 and sys.argv[1] == "attack":
        trio.run(attack, sys.argv[2], sys.argv[3])
    else:
        trio.run(main, parse_args())
