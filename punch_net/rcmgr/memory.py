"""Give freed request buffers back to the OS, so RSS returns to its baseline after a flood.

What a burst of requests leaves spread over the heap is handed back by `malloc_trim` a
few times after the burst (`trim_after_bursts`, a task of the node; Linux/glibc only,
elsewhere nothing). glibc's own mmap threshold is left alone: fixing it at 256 KiB (as
this module did) made every buffer of 256 KiB or more a fresh mmap whose pages all fault
in, ~0.6 ms per MB (a reused heap block: ~0.02 ms), and a bulk transfer makes several
such buffers per MiB it moves (measured: a 256 MiB loopback torrent download took 1.9 s
of client CPU with it, 1.2 s without, and the server 0.8 s against 0.4 s). With the
backpressure of the command server and the trim, 6 peers pipelining 1 MiB requests no
longer leave RSS up (tests/adversarial/test_attacks.py, the non-reading peers test).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import trio

from punch_net.rcmgr.manager import ResourceManager

TRIM_INTERVAL = 10.0  # seconds between looks at how much request memory was released
TRIM_BURST = 16 * 1024 * 1024  # released since the last look: a burst worth trimming after
TRIM_TAIL = 3  # looks after a burst that still trim (connections and streams close later)


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # the process's own symbols, libc's among them: find_library("c") would run
        # `ldconfig -p` in a child process at every start (~1-2 ms of CPU)
        return ctypes.CDLL(None)
    except OSError:
        return None


async def trim_after_bursts(rcmgr: ResourceManager, interval: float = TRIM_INTERVAL) -> None:
    """Run for the node's life: after a burst of request memory, `malloc_trim(0)` on each of
    the next few looks (a flood's freed heap pages go back; a quiet node costs nothing)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return
    seen, tail = rcmgr.memory_released, 0
    while True:
        await trio.sleep(interval)
        released, seen = rcmgr.memory_released - seen, rcmgr.memory_released
        tail = TRIM_TAIL if released >= TRIM_BURST else max(0, tail - 1)
        if tail:
            trim(0)
