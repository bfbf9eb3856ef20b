"""The app as its parts see it: tabs, screens and the command palette call these, so none
of them imports `punch_tui.app` (which imports all of them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar, cast

from punch_net.api import JSONObject, NodeAPI, Snapshot
from punch_net.config import NodeConfig
from punch_tui.bridge import NodeBridge
from punch_tui.peers import PeerBook
from punch_tui.widgets.plots import NodeHistory

T = TypeVar("T")


class Console(Protocol):
    node_config: NodeConfig
    peers: PeerBook
    my_addrs: list[str]
    bridge: NodeBridge
    history: NodeHistory  # the node's series over the last minutes (plots)
    last_snapshot: Snapshot | None

    @property
    def available_themes(self) -> Mapping[str, object]: ...

    def run_node(self, label: str, op: Callable[[NodeAPI], Awaitable[T]],
                 on_ok: Callable[[T], None] | None = None) -> None:
        """Run `op(api)` in a worker through the bridge; a failure becomes a notification."""
        ...

    def open_prompt(self, verb: str, initial: str = "") -> None: ...

    def dial(self, addr: str) -> None: ...

    def find_peers(self, namespace: str) -> None: ...

    def ping_peer(self, peer: str) -> None: ...

    def disconnect_peer(self, peer: str) -> None: ...

    def request_peer(self, peer: str, command: str, args: JSONObject) -> None: ...

    def send_to_peer(self, peer_text: str, command: str, payload: str) -> str | None: ...

    def download(self, info_hash: str, name: str = "") -> None: ...

    def switch_theme(self, name: str) -> None: ...

    def copy_my_address(self, addr: str | None = None) -> None: ...

    def action_show_tab(self, name: str) -> None: ...

    def clear_filter(self) -> None: ...


def console(app: object) -> Console:
    """`widget.app` as a Console: the running PunchApp, typed by what it offers, not by its class."""
    return cast(Console, app)
