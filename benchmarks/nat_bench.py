"""NAT traversal benchmark on the real NAT rig (tests/support/rig.py): needs root.

Per scenario, N trials (default 20), each a fresh `punch dialer` (new identity) against one
long-running relay and listener:

  direct     listener public (198.18.0.20), dialer behind NAT B: the baseline, same run
  relay      listener behind NAT A, dialer public, hole punching off: replies via the relay
  dcutr      both behind endpoint-independent NATs: relayed, then DCUtR to direct
  symmetric  B's NAT maps symmetrically (fully-random): DCUtR must fail, replies stay relayed

Reported: connection success (a reply arrived), DCUtR success (listener-side outcome),
broken relayed connections (a failed request, or a second relayed connection to the
listener, before the trial ended), time from the dialer being up (its `listening` event) to the first reply and to the
direct (hole-punched) connection, p50/p95, and the outcome counts.

    sudo .venv/bin/python benchmarks/nat_bench.py [--trials 20] [--parallel N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from nat_harness import Punch, is_kind, relay_addr, start_listener, start_relay
from rig import NatRig, rig_unavailable_reason

TRIAL_TIMEOUT = 40.0
DEBUG = False


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def dialer(rig: NatRig, where: str, rid: str, ns: str, port: int, name: str, *extra: str) -> Punch:
    return Punch(rig, where, name, ["dialer", "--listen-addr", "0.0.0.0", "--port", str(port), "--ephemeral",
                                    "--bootstrap", relay_addr(rid), "--namespace", ns, "--interval", "0.5", *extra])


def run_trial(d: Punch, listener: Punch, want_punch: bool) -> dict[str, Any]:
    """Wait for the first reply (and, if wanted, the listener's hole-punch outcome)."""
    out: dict[str, Any] = {"ok": False, "reply_s": None, "direct_s": None, "outcome": None, "first_via": None,
                           "broken": False}
    try:
        up = d.wait_for(is_kind("listening"), 30, "listening")["_t"]
        reply = d.wait_for(lambda e: e.get("event") == "reply" and e.get("ok"), TRIAL_TIMEOUT, "reply")
        out["ok"] = True
        out["reply_s"] = reply["_t"] - up
        if out["reply_s"] > 3 and DEBUG:
            for e in d.events:
                sys.stderr.write(f"  {e['_t'] - up:7.2f} {json.dumps(e)[:230]}\n")
        conns = [e for e in d.kinds("connected") if e["peer_id"] == listener.peer_id]
        out["first_via"] = conns[0]["via"] if conns else None
        if want_punch:
            me = d.peer_id
            punch = listener.wait_for(lambda e: e.get("event") == "hole_punch" and e["peer_id"] == me,
                                      TRIAL_TIMEOUT, "hole_punch")
            out["outcome"] = punch["outcome"]
            if punch["outcome"] == "SUCCESS":  # the dialer's own line may still be in its pipe
                direct = d.wait_for(is_kind("connected", via="hole_punch"), 5, "hole-punched connection")
                out["direct_s"] = direct["_t"] - up
    except AssertionError as exc:
        out["error"] = str(exc)[:200]
    finally:
        d.stop()
        relayed = [e for e in d.kinds("connected") if e["peer_id"] == listener.peer_id and e["via"] == "relay"]
        failed = [e for e in d.kinds("error") if e.get("where") == "dialer"]
        out["broken"] = len(relayed) > 1 or bool(failed)
    return out


def scenario(name: str, trials: int, tmp: Path, *, listener_at: str, dialer_at: str, symmetric: tuple[str, ...] = (),
             listener_flags: tuple[str, ...] = (), punch: bool = False, parallel: int = 1) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with NatRig(prefix=f"pnb{name[:4]}_", symmetric=symmetric, log_dir=tmp) as rig:
        relay = start_relay(rig, tmp / f"relay-{name}")
        rid = relay.peer_id
        lis = start_listener(rig, listener_at, rid, f"bench-{name}", *listener_flags)
        if listener_at in ("a", "b"):
            lis.wait_for(is_kind("reservation"), 60, "reservation")
        lis.wait_for(lambda e: e.get("event") == "registered", 60, "registered")
        time.sleep(0.5)
        n = 0
        while n < trials:
            batch = min(parallel, trials - n)
            # a fresh port per trial: re-using a 4-tuple within TIME_WAIT would break the next punch
            ds = [dialer(rig, dialer_at, rid, f"bench-{name}", 4100 + n + i, f"d{name}{n + i}") for i in range(batch)]
            if batch == 1:
                results.append(run_trial(ds[0], lis, punch))
            else:
                import concurrent.futures as cf

                with cf.ThreadPoolExecutor(batch) as pool:
                    results.extend(pool.map(lambda d: run_trial(d, lis, punch), ds))
            n += batch
            sys.stderr.write(f"\r{name}: {n}/{trials}")
            sys.stderr.flush()
        sys.stderr.write("\n")
    return results


def summarize(name: str, rows: list[dict[str, Any]], punch: bool) -> dict[str, Any]:
    ok = [r for r in rows if r["ok"]]
    reply = [r["reply_s"] for r in ok]
    direct = [r["direct_s"] for r in rows if r["direct_s"] is not None]
    outcomes = Counter(r["outcome"] for r in rows if r["outcome"])
    return {
        "scenario": name, "trials": len(rows), "connected": len(ok),
        "broken": sum(1 for r in rows if r["broken"]),
        "via": dict(Counter(r["first_via"] for r in ok)),
        "dcutr_success": outcomes.get("SUCCESS", 0) if punch else None,
        "outcomes": dict(outcomes),
        "reply_p50": pct(reply, 50), "reply_p95": pct(reply, 95),
        "reply_mean": statistics.fmean(reply) if reply else None,
        "direct_p50": pct(direct, 50), "direct_p95": pct(direct, 95),
        "errors": [r["error"] for r in rows if r.get("error")][:3],
    }


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}s"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--only", action="append", choices=["direct", "relay", "dcutr", "symmetric"])
    ap.add_argument("--json", type=Path, help="write the summary here")
    ap.add_argument("--parallel", type=int, default=1, metavar="N",
                    help="start N dialers at once in each scenario (docs/NAT.md: 5 at once)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminate)  # unwind the rigs' `with` blocks: namespaces get deleted
    reason = rig_unavailable_reason()
    if reason:
        print(f"nat_bench: cannot build the NAT rig: {reason}", file=sys.stderr)
        return 2
    plan = [
        ("direct", dict(listener_at="pub", dialer_at="b", parallel=args.parallel)),
        ("relay", dict(listener_at="a", dialer_at="pub", listener_flags=("--no-hole-punch",),
                       parallel=args.parallel)),
        ("dcutr", dict(listener_at="a", dialer_at="b", punch=True, parallel=args.parallel)),
        ("symmetric", dict(listener_at="a", dialer_at="b", symmetric=("b",), punch=True,
                           parallel=args.parallel)),
    ]
    summaries = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in plan:
            if args.only and name not in args.only:
                continue
            rows = scenario(name, args.trials, Path(tmp), **kw)  # type: ignore[arg-type]
            summaries.append(summarize(name, rows, bool(kw.get("punch"))))
    print(f"\nNAT traversal on the namespace rig, {args.trials} trials per scenario "
          f"({time.monotonic() - t0:.0f} s). Times from the dialer's start (listening) event.\n")
    head = f"{'scenario':<10} {'connected':>10} {'broken':>6} {'first via':<12} {'DCUtR ok':>9} " \
           f"{'reply p50':>10} {'reply p95':>10} {'direct p50':>11} {'direct p95':>11}"
    print(head)
    print("-" * len(head))
    for s in summaries:
        via = ",".join(f"{k}:{v}" for k, v in s["via"].items()) or "—"
        dc = "—" if s["dcutr_success"] is None else f"{s['dcutr_success']}/{s['trials']}"
        print(f"{s['scenario']:<10} {s['connected']:>4}/{s['trials']:<5} {s['broken']:>6} {via:<12} {dc:>9} "
              f"{fmt(s['reply_p50']):>10} {fmt(s['reply_p95']):>10} {fmt(s['direct_p50']):>11} "
              f"{fmt(s['direct_p95']):>11}")
    for s in summaries:
        if s["outcomes"]:
            print(f"  {s['scenario']}: outcomes {s['outcomes']}")
        for err in s["errors"]:
            print(f"  {s['scenario']}: error: {err}")
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
