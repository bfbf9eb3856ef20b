"""Dial addresses with a real Node (circuit addresses go through the relay) and report.

Run inside a rig namespace: `python dial_probe.py ADDR [ADDR ...] [--hold S]`. Prints one
JSON line per address ({"addr", "ok", "error", "ms"}), then keeps the connections open
for `--hold` seconds so a test can fill a relay's circuit slots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import trio

from punch_net.api import NodeError
from punch_net.config import NodeConfig
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.runtime import Runtime


async def main(addrs: list[str], hold: float, timeout: float) -> int:
    cfg = NodeConfig(role="dialer", listen_addr="0.0.0.0", port=0, bootstrap=[], ephemeral=True,
                     dial_timeout=timeout, auto_relay=False, hole_punch=False)
    node = Runtime(cfg).node  # with the relay manager: circuit addresses go through the relay
    failures = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        for addr in addrs:
            t0 = time.monotonic()
            try:
                with trio.fail_after(timeout + 5):
                    await node.dial(addr)
                out = {"addr": addr, "ok": True, "error": "", "ms": round((time.monotonic() - t0) * 1000, 1)}
            except (NodeError, trio.TooSlowError) as exc:
                failures += 1
                out = {"addr": addr, "ok": False, "error": str(exc) or "timed out",
                       "ms": round((time.monotonic() - t0) * 1000, 1)}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
        await trio.sleep(hold)
        nursery.cancel_scope.cancel()
    return 1 if failures else 0


if __name__ == "__main__":
    quiet_libp2p_logging()
    p = argparse.ArgumentParser()
    p.add_argument("addrs", nargs="+")
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()
    sys.exit(trio.run(main, a.addrs, a.hold, a.timeout))
