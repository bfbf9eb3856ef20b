"""Run Punch's benchmarks (`make bench`) and print their tables.

    .venv/bin/python benchmarks/run.py              # every benchmarks/*_bench.py, core first
    .venv/bin/python benchmarks/run.py core nat     # only core_bench.py and nat_bench.py
    .venv/bin/python benchmarks/run.py --list

Each `*_bench.py` is a standalone script that measures its own figures beside a baseline
taken in the same run and prints a table; this runner starts each one as a separate
process (so one bench's sockets, threads and memory never colour the next), streams its
output, and ends with a summary of which benches ran and how long they took. Exit status
is non-zero when a bench fails to run (a missed target is reported in its table, not here).

These are benchmarks, not tests: run them on a quiet machine, and read figures beside the
baseline row of the same run rather than in absolute terms.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = ["core"]  # the core bench leads: the others build on it


def discover() -> dict[str, Path]:
    found = {p.name.removesuffix("_bench.py"): p for p in sorted(HERE.glob("*_bench.py"))}
    order = [n for n in FIRST if n in found] + [n for n in found if n not in FIRST]
    return {n: found[n] for n in order}


def main(argv: list[str] | None = None) -> int:
    benches = discover()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benches to run (default all: {', '.join(benches)})")
    parser.add_argument("--list", action="store_true", help="list the benches and exit")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one bench may take (default 1800)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{n:10} {p.name}" for n, p in benches.items()))
        return 0
    unknown = [n for n in args.names if n not in benches]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)} (have: {', '.join(benches)})")
    chosen = args.names or list(benches)

    summary: list[tuple[str, str, float]] = []
    for name in chosen:
        print(f"\n=== {name} ({benches[name].name}) ===", flush=True)
        start = time.monotonic()
        try:
            code = subprocess.run([sys.executable, str(benches[name])], timeout=args.timeout,
                                  stdin=subprocess.DEVNULL).returncode
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {args.timeout:g}s"
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        summary.append((name, status, time.monotonic() - start))

    print("\n=== summary ===")
    width = max(len(n) for n, _, _ in summary)
    for name, status, took in summary:
        print(f"{name:<{width}}  {status:<24} {took:6.1f} s")
    return 0 if all(s == "ok" for _, s, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
