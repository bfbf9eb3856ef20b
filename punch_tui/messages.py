"""Textual messages the bridge posts: the only way node state reaches widgets."""

from __future__ import annotations

from textual.message import Message

from punch_net import events as ev
from punch_net.api import Snapshot


class NodeStarted(Message):
    """The node listens: its peer id and addresses are known."""

    def __init__(self, peer_id: str, addrs: list[str]) -> None:
        super().__init__()
        self.peer_id = peer_id
        self.addrs = addrs


class NodeEvents(Message):
    """A batch of node events, oldest first (batched so a busy node costs one message)."""

    def __init__(self, events: list[ev.Event]) -> None:
        super().__init__()
        self.events = events


class SnapshotReady(Message):
    """A fresh `api.snapshot()` (polled ~1/s)."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class AttachStatus(Message):
    """--attach: the control connection is "connected" or "disconnected, retrying"."""

    def __init__(self, state: str, detail: str = "") -> None:
        super().__init__()
        self.state = state
        self.detail = detail


class NodeStopped(Message):
    """The node ended: `error` is the one-line reason, or None when the role finished."""

    def __init__(self, error: str | None, exit_code: int | None = None) -> None:
        super().__init__()
        self.error = error
        self.exit_code = exit_code
