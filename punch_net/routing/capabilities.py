"""What a node can offer, read with psutil: the answer to the `capabilities` command."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import psutil
import trio

from punch_net import __version__
from punch_net import events as ev
from punch_net.messaging.commands import Call, CommandError
from punch_net.node import Node

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


# ---------------------------------------------------------------- scoring inputs

DISK_TARGET_BYTES = 10 * 1024**3  # free space at which the disk term is full (1.0)
SUBSCRIPTION_TTL = 600.0  # seconds a peer that asked keeps getting re-announcements
ANNOUNCE_INTERVAL = 30.0
ANNOUNCE_TIMEOUT = 5.0
MAX_SUBSCRIBERS = 256
OVERRIDE_ENV = "PUNCH_CAPS_OVERRIDE"  # JSON merged into our answer (test networks); flagged "simulated"


def _num(caps: dict[str, Any], key: str) -> float | None:
    value = caps.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _clamp(x: float) -> float:
    return max(0.0, min(1.0, x))


def headroom(caps: dict[str, Any] | None, disk_target: float = DISK_TARGET_BYTES) -> dict[str, float | None]:
    """What a peer has to spare, each term in [0, 1] (None: the peer did not say).

    cpu    = 1 - max(cpu_percent / 100, load1 / cores)   (busy by either measure = busy)
    memory = memory_available / memory_total
    disk   = min(1, disk_free / disk_target)             (10 GiB free counts as plenty)
    """
    out: dict[str, float | None] = {"cpu": None, "memory": None, "disk": None}
    if not caps:
        return out
    busy: list[float] = []
    cpu = _num(caps, "cpu_percent")
    if cpu is not None:
        busy.append(cpu / 100.0)
    cores = _num(caps, "cores") or 1.0
    load = caps.get("load")
    if isinstance(load, list) and load and isinstance(load[0], int | float) and not isinstance(load[0], bool):
        busy.append(float(load[0]) / max(1.0, cores))
    if busy:
        out["cpu"] = _clamp(1.0 - max(busy))
    total, avail = _num(caps, "memory_total"), _num(caps, "memory_available")
    if total and avail is not None and total > 0:
        out["memory"] = _clamp(avail / total)
    free = _num(caps, "disk_free")
    if free is not None and disk_target > 0:
        out["disk"] = _clamp(free / disk_target)
    return out


def local_capabilities(data_dir: Path | None) -> dict[str, Any]:
    """`capabilities()`, plus the test-network override (PUNCH_CAPS_OVERRIDE) that lets one
    machine play nodes of different sizes; the answer then lists the replaced keys under
    `simulated`, so nobody mistakes it for a measurement."""
    caps = capabilities(data_dir)
    if os.environ.get(OVERRIDE_ENV):
        import json

        try:
            extra = json.loads(os.environ[OVERRIDE_ENV])
        except ValueError:
            extra = {}
        if isinstance(extra, dict):
            caps.update(extra)
            caps["simulated"] = sorted(extra)
    return caps


class CapabilityBook:
    """What we know of other peers' capabilities, and which peers asked for ours.

    Pure bookkeeping (no I/O): the node's handlers and announcer task drive it."""

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.known: dict[str, tuple[dict[str, Any], float]] = {}
        self.subscribers: dict[str, float] = {}  # peer -> subscription expiry
        self.announced = 0

    def asked(self, peer: str, subscribe: bool = True) -> None:
        if not subscribe:
            self.subscribers.pop(peer, None)
            return
        if peer not in self.subscribers and len(self.subscribers) >= MAX_SUBSCRIBERS:
            oldest = min(self.subscribers, key=self.subscribers.__getitem__)
            del self.subscribers[oldest]
        self.subscribers[peer] = self.clock() + SUBSCRIPTION_TTL

    def live_subscribers(self) -> list[str]:
        now = self.clock()
        for peer in [p for p, exp in self.subscribers.items() if exp <= now]:
            del self.subscribers[peer]
        return list(self.subscribers)

    def drop(self, peer: str) -> None:
        self.subscribers.pop(peer, None)

    def store(self, peer: str, caps: dict[str, Any]) -> None:
        self.known[peer] = (dict(caps), self.clock())

    def get(self, peer: str, max_age: float | None = None) -> dict[str, Any] | None:
        entry = self.known.get(peer)
        if entry is None:
            return None
        caps, ts = entry
        if max_age is not None and self.clock() - ts > max_age:
            return None
        return caps

    def age(self, peer: str) -> float | None:
        entry = self.known.get(peer)
        return None if entry is None else self.clock() - entry[1]


def serve_capabilities(node: Node, book: CapabilityBook) -> None:
    """Answer `capabilities` (and note who asked) and accept `capabilities.update`
    re-announcements into `book`. `run_announcer` does the pushing."""

    async def caps(call: Call) -> dict[str, Any]:
        book.asked(call.peer_id, call.request.args.get("subscribe", True) is not False)
        return local_capabilities(node.config.data_dir)

    async def update(call: Call) -> dict[str, Any]:
        args = call.request.args
        if not isinstance(args, dict) or len(str(args)) > 16_384:
            raise CommandError("bad_args", "capabilities must be a JSON object under 16 KiB")
        book.store(call.peer_id, args)
        node.bus.publish(ev.CapabilitiesUpdated(peer_id=call.peer_id, capabilities=args))
        return {"stored": True}

    node.registry.register("capabilities", caps)
    node.registry.register("capabilities.update", update)


async def fetch_capabilities(node: Node, book: CapabilityBook, peer: str,
                             timeout: float = ANNOUNCE_TIMEOUT) -> dict[str, Any]:
    """Ask a peer for its capabilities (subscribing to its re-announcements) and cache them."""
    resp = await node.request(peer, "capabilities", {"subscribe": True}, timeout, quiet=True)
    if not resp.ok:
        raise ValueError(f"{peer} refused capabilities: {resp.error_code}: {resp.error_message}")
    result = resp.result
    if not isinstance(result, dict):
        raise ValueError(f"{peer} answered capabilities with {type(result).__name__}")
    book.store(peer, result)
    node.bus.publish(ev.CapabilitiesUpdated(peer_id=peer, capabilities=result))
    return result


async def run_announcer(node: Node, book: CapabilityBook, interval: float = ANNOUNCE_INTERVAL) -> None:
    """Every `interval` seconds push our capabilities to connected peers that asked."""
    while True:
        await trio.sleep(interval)
        peers = book.live_subscribers()
        if not peers:
            continue
        caps = local_capabilities(node.config.data_dir)
        connected = {str(p) for p in node.connected_peers()}

        async def push(peer: str, caps: dict[str, Any] = caps) -> None:
            try:
                resp = await node.request(peer, "capabilities.update", caps, ANNOUNCE_TIMEOUT, quiet=True)
            except Exception:
                return  # not connected any more or slow: try again next round
            if not resp.ok and resp.error_code == "unknown_command":
                book.drop(peer)
            elif resp.ok:
                book.announced += 1

        async with trio.open_nursery() as nursery:
            for peer in peers:
                if peer in connected:
                    nursery.start_soon(push, peer)
