"""Punch processes inside the rig's namespaces, with their `--json` events collected."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rig import RELAY_IP, NatRig, Proc

RELAY_PORT = 4001
START_TIMEOUT = 90.0  # a loaded 2-core CI box can take tens of seconds to start Python + libp2p
Event = dict[str, Any]


class Punch:
    """One `punch ROLE --json` process in a namespace; events arrive on a reader thread."""

    def __init__(self, rig: NatRig, where: str, name: str, args: list[str],
                 program: list[str] | None = None) -> None:
        """`program`: what runs instead of `python -m punch_net.cli` (e.g. torrent_test_peers.py MODE)."""
        self.rig = rig
        self.name = name
        argv = [*(program or [sys.executable, "-m", "punch_net.cli"]), *args, "--json"]
        self.proc: Proc = rig.spawn(where, name, argv)
        self.events: list[Event] = []
        self._q: queue.Queue[Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.started = time.monotonic()

    def _read(self) -> None:
        out = self.proc.popen.stdout
        assert out is not None
        for raw in out:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            event["_t"] = time.monotonic()
            self._q.put(event)
        self._q.put(None)

    def _drain(self, block_for: float) -> bool:
        """Move queued events into `events`; False once the process's stdout ended."""
        try:
            item = self._q.get(timeout=block_for)
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            self.events.append(item)
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return True

    def wait_for(self, pred: Callable[[Event], bool], timeout: float, what: str = "") -> Event:
        """The first event (already seen or new) matching `pred`; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        seen = 0
        alive = True
        while True:
            for event in self.events[seen:]:
                if pred(event):
                    return event
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0 or not alive:
                break
            alive = self._drain(min(left, 0.2))
        raise AssertionError(f"{self.name}: no {what or 'matching event'} within {timeout:g}s "
                             f"(exit={self.proc.popen.poll()}); last events: {self.events[-8:]}; "
                             f"stderr: {tail(self.proc.log)}")

    def kinds(self, kind: str) -> list[Event]:
        self._drain(0)
        return [e for e in self.events if e.get("event") == kind]

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.popen.poll() is None and time.monotonic() < deadline:
            self._drain(0.1)
        code = self.proc.popen.poll()
        if code is None:
            raise AssertionError(f"{self.name} still running after {timeout:g}s; last events: {self.events[-8:]}")
        self._thread.join(timeout=2)
        self._drain(0)
        return code

    def stop(self) -> None:
        self.rig.kill(self.proc)
        self.rig.procs = [p for p in self.rig.procs if p is not self.proc]
        self._thread.join(timeout=2)
        self._drain(0)

    @property
    def peer_id(self) -> str:
        return str(self.wait_for(lambda e: e.get("event") == "listening", START_TIMEOUT, "listening event")["peer_id"])


def tail(path: Path, n: int = 600) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def relay_addr(peer_id: str | None = None) -> str:
    return f"/ip4/{RELAY_IP}/tcp/{RELAY_PORT}" + (f"/p2p/{peer_id}" if peer_id else "")


def start_relay(rig: NatRig, data_dir: Path, *extra: str, name: str = "relay") -> Punch:
    return Punch(rig, "relay", name, ["server", "--listen-addr", "0.0.0.0", "--port", str(RELAY_PORT),
                                      "--data-dir", str(data_dir), *extra])


def start_listener(rig: NatRig, where: str, relay_id: str, namespace: str, *extra: str, name: str = "") -> Punch:
    return Punch(rig, where, name or f"listener_{where}",
                 ["listener", "--listen-addr", "0.0.0.0", "--port", "4001", "--ephemeral",
                  "--bootstrap", relay_addr(relay_id), "--namespace", namespace, *extra])


def start_dialer(rig: NatRig, where: str, relay_id: str, namespace: str, *extra: str, name: str = "") -> Punch:
    return Punch(rig, where, name or f"dialer_{where}",
                 ["dialer", "--listen-addr", "0.0.0.0", "--port", "4002", "--ephemeral",
                  "--bootstrap", relay_addr(relay_id), "--namespace", namespace, *extra])


def is_kind(kind: str, **fields: Any) -> Callable[[Event], bool]:
    def pred(e: Event) -> bool:
        return e.get("event") == kind and all(e.get(k) == v for k, v in fields.items())
    return pred
