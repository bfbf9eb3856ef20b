"""What every tab shares: it receives snapshots and events from the app, and names
the widget that `/` filters."""

from __future__ import annotations

from typing import Any

from textual.containers import Vertical

from punch_net import events as ev
from punch_net.api import Snapshot


class NodeTab(Vertical):
    """Base of each tab module. Subclasses override what they need."""

    TITLE = "?"
    snapshot_ts = 0.0  # when the shown snapshot was taken

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.snapshot_ts = snap.ts
        self.update_snapshot(snap)

    def update_snapshot(self, snap: Snapshot) -> None:
        """Called ~1/s with the newest node snapshot (also when the tab is hidden)."""

    def handle_events(self, events: list[ev.Event]) -> None:
        """Called with each batch of node events."""

    def filter_target(self) -> Any | None:
        """The widget with `set_filter(text)` that `/` applies to, if any."""
        return None
