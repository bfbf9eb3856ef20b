"""What a node can offer, read with psutil: the answer to the `capabilities` command."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import psutil

from punch_net import __version__

_STARTED = time.time()


def capabilities(data_dir: Path | None = None) -> dict[str, Any]:
    disk_path = str(data_dir) if data_dir and data_dir.exists() else os.getcwd()
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(disk_path)
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "cores": psutil.cpu_count(logical=True) or 1,
        "cpu_percent": psutil.cpu_percent(interval=None),
        "load": load,
        "memory_total": mem.total,
        "memory_available": mem.available,
        "disk_free": disk.free,
        "disk_total": disk.total,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "punch_version": __version__,
        "uptime_s": round(time.time() - _STARTED, 1),
    }
