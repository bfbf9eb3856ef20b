"""Byte rates over a sliding window (pure; the clock is passed in)."""

from __future__ import annotations

from collections import deque

WINDOW = 5.0  # seconds


class RateMeter:
    """Bytes per second over the last WINDOW seconds, in 0.25 s buckets."""

    def __init__(self, window: float = WINDOW, bucket: float = 0.25) -> None:
        self.window = window
        self.bucket = bucket
        self.total = 0
        self._buckets: deque[list[float]] = deque()  # [bucket start, bytes]
        self._first: float | None = None

    def add(self, nbytes: int, now: float) -> None:
        self.total += nbytes
        if self._first is None:
            self._first = now
        start = now - now % self.bucket
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += nbytes
        else:
            self._buckets.append([start, float(nbytes)])
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] < now - self.window:
            self._buckets.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if not self._buckets or self._first is None:
            return 0.0
        span = min(self.window, max(now - self._first, self.bucket))
        return sum(b[1] for b in self._buckets) / span


def eta_seconds(remaining: int, rate: float) -> float | None:
    if remaining <= 0:
        return 0.0
    if rate <= 0:
        return None
    return remaining / rate
