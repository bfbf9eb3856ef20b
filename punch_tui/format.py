"""Small pure formatting helpers shared by the tabs (tested without a terminal)."""

from __future__ import annotations

import time


def short_id(peer_id: str, n: int = 8) -> str:
    """The tail of a peer id, as libp2p tools print it (`…Ab3dEf9Q`)."""
    return peer_id if len(peer_id) <= n + 1 else "…" + peer_id[-n:]


def age(seconds: float | None) -> str:
    """12s, 4m, 3h, 2d: an age that fits in five columns."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def since(ts: float | None, now: float | None = None) -> str:
    if ts is None or ts <= 0:
        return "never"
    return age((now or time.time()) - ts)


def rate(bytes_per_s: float) -> str:
    value = float(bytes_per_s)
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if value < 1000 or unit == "GB/s":
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB/s"


def size(n: float) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def short_proto(proto: str) -> str:
    """`/ipfs/kad/1.0.0` -> `kad`, `/punch/cmd/1.0.0` -> `punch/cmd`."""
    parts = [p for p in proto.split("/") if p]
    if parts and parts[-1][:1].isdigit():
        parts = parts[:-1]
    if parts and parts[0] in ("ipfs", "libp2p"):
        parts = parts[1:]
    return "/".join(parts) or proto
