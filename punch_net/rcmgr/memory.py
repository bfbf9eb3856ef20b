"""Give freed request buffers back to the OS, so RSS returns to its baseline after a flood.

Two measures (Linux/glibc; elsewhere nothing):

glibc serves blocks of 128 KiB and more with mmap, but after the first such block is freed
it raises that threshold to the block's size (up to 32 MiB): from then on every 1 MiB
request is carved from the heap and, freed, stays in the process (measured: 6 peers
pipelining 1 MiB requests left RSS at +90 MiB for good). A fixed threshold keeps big
buffers on mmap, unmapped as soon as they are freed. What smaller objects leave spread
over the heap is handed back by `malloc_trim` a few times after a burst of requests
(`trim_after_bursts`, a task of the node).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

import trio

from punch_net.rcmgr.manager import ResourceManager

M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)
MMAP_THRESHOLD = 256 * 1024

TRIM_INTERVAL = 10.0  # seconds between looks at how much request memory was released
TRIM_BURST = 16 * 1024 * 1024  # released since the last look: a burst worth trimming after
TRIM_TAIL = 3  # looks after a burst that still trim (connections and streams close later)

_done = False


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_big_buffers_on_mmap(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (process-wide, once). True when it took effect."""
    global _done
    if _done:
        return True
    libc = _libc()
    try:
        _done = bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except AttributeError:
        return False  # not glibc (musl has no mallopt)
    return _done


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
