"""Bytes in/out of the node's TCP connections, read from the kernel (Linux TCP_INFO:
tcpi_bytes_received / tcpi_bytes_acked). A fallback: the core counts its own traffic
(`node.stats()["bytes_in"]`, from punch_net.p2p.fastpath) and the Overview prefers that;
this is used only while those counters are still zero.

Runs on the trio side (from `take_snapshot`), reads only socket options, never blocks.
A connection without a TCP socket (a relayed circuit) is carried by one that has one,
so the totals still include it."""

from __future__ import annotations

import socket
import struct
from typing import Any

TCP_INFO_LEN = 136
BYTES_OFFSET = 120  # struct tcp_info: u64 tcpi_bytes_acked at 120, u64 tcpi_bytes_received at 128
_PATH = ("muxed_conn", "secured_conn", "conn", "stream", "socket")
MAX_DEPTH = 10


def find_socket(conn: Any) -> Any | None:
    """Walk a py-libp2p connection down to its socket (SwarmConn -> Yamux -> secure session
    -> noise -> raw connection -> trio stream -> socket); None when there is none."""
    obj = conn
    for _ in range(MAX_DEPTH):
        if hasattr(obj, "getsockopt") and hasattr(obj, "fileno"):
            return obj
        for attr in _PATH:
            nxt = getattr(obj, attr, None)
            if nxt is not None and nxt is not obj:
                obj = nxt
                break
        else:
            return None
    return None


def parse_tcp_info(raw: bytes) -> tuple[int, int] | None:
    """(bytes received, bytes sent and acknowledged) from a TCP_INFO blob, if it is long enough."""
    if len(raw) < BYTES_OFFSET + 16:
        return None
    acked, received = struct.unpack_from("=QQ", raw, BYTES_OFFSET)
    return received, acked


def tcp_bytes(sock: Any) -> tuple[int, int] | None:
    opt = getattr(socket, "TCP_INFO", None)
    if opt is None:
        return None
    try:
        return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, opt, TCP_INFO_LEN))
    except (OSError, ValueError, TypeError):
        return None


class TrafficMeter:
    """Running totals over every connection seen, so closed connections still count
    (up to the last sample before they closed)."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, int], tuple[int, int]] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.available = hasattr(socket, "TCP_INFO")  # Linux; elsewhere the Overview says so

    def sample(self, conns: list[Any]) -> tuple[int, int] | None:
        seen: dict[tuple[int, int], tuple[int, int]] = {}
        for conn in conns:
            sock = find_socket(conn)
            if sock is None:
                continue
            counts = tcp_bytes(sock)
            if counts is None:
                continue
            try:
                key = (id(conn), sock.fileno())
            except OSError:
                continue
            prev = self._last.get(key, (0, 0))
            self.bytes_in += max(0, counts[0] - prev[0])
            self.bytes_out += max(0, counts[1] - prev[1])
            seen[key] = counts
        self._last = seen
        return (self.bytes_in, self.bytes_out) if self.available else None
