"""Pilot tests of dialing by peer id and of tab completion in the console, against real
nodes in child processes on 127.0.0.1: a DHT server and a listener in DHT-client mode, so
only the server knows the listener's addresses (through its connection to it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.command import CommandInput
from tui_net import Network, make_app, open_palette, screen_text, wait_palette_hit, wait_until

from punch_net.p2p.addresses import short_peer_id
from punch_tui.format import short_id
from punch_tui.screens.prompt import PromptScreen
from punch_tui.widgets.logview import LogView
from punch_tui.widgets.table import FilterTable

SIZE = (100, 30)


class ClientListenerNet(Network):
    """A server and one listener that is a DHT client (not in any routing table)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.namespace = "tui-dial"
        self.env = {"PUNCH_DATA_DIR": str(tmp / "data"), "PUNCH_CONFIG": str(tmp / "config.toml")}
        self.children = []
        try:
            self.server = self.start("server")
            self.server.wait("listening")
            self.listener = self.start("listener", "--bootstrap", self.server.addr, "--namespace", self.namespace,
                                       "--dht-mode", "client")
            self.listener.wait("registered")
        except BaseException:
            self.close()
            raise


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientListenerNet]:
    network = ClientListenerNet(tmp_path_factory.mktemp("tui-dial"))
    try:
        yield network
    finally:
        network.close()


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def console_app(net: ClientListenerNet, tmp: Path) -> object:
    """The console's own node: a DHT client too, on another namespace, so nothing but the
    palette makes it connect to the listener."""
    return make_app(tmp, "listener", [net.server.addr], namespace="tui-dial-console", dht_mode="client")


def connected(app: object) -> set[str]:
    snap = app.last_snapshot  # type: ignore[attr-defined]
    return {c.peer_id for c in snap.connections} if snap is not None else set()


def test_palette_dials_a_dht_client_listener_known_only_by_its_peer_id(net: ClientListenerNet,
                                                                       tmp_path: Path) -> None:
    """ctrl+p `dial ID`: the node looks the id up (routing table ✗, peerstore ✗, DHT → the
    server names the listener connected to it), dials, and the listener shows on Connections."""
    target = net.listener.peer_id

    async def scenario() -> None:
        app = console_app(net, tmp_path)
        async with app.run_test(size=SIZE, notifications=True) as pilot:  # type: ignore[attr-defined]
            await wait_until(pilot, lambda: net.server.peer_id in connected(app), what="bootstrapped")
            assert target not in connected(app) and target not in app.peers.addrs  # type: ignore[attr-defined]
            await open_palette(pilot, app)
            await pilot.press(*f"dial {target}")
            await wait_palette_hit(pilot, app, f"dial {target}")
            await pilot.press("enter")
            await wait_until(pilot, lambda: target in connected(app), what="the listener connected")
            await pilot.press("3")
            table = app.query_one("#conn-table", FilterTable)  # type: ignore[attr-defined]
            await wait_until(pilot, lambda: short_id(target, 12) in table.column_texts("peer"),
                             what="the listener on the Connections tab")
            await pilot.press("1")
            log = app.query_one("#ov-events", LogView)  # type: ignore[attr-defined]
            steps = "\n".join(log.visible_texts())
            who = short_peer_id(target)
            assert f"looking up {who}: routing table ✗, peerstore ✗, DHT → 1 addr" in steps, steps
            assert f"dialing {who} at /ip4/127.0.0.1/tcp/" in steps and f"dial {who}: connected" in steps, steps
            await pilot.press("q")

    run(scenario())


def test_tab_completes_a_command_and_a_peer_id_in_the_palette(net: ClientListenerNet, tmp_path: Path) -> None:
    server = net.server.peer_id

    async def scenario() -> None:
        app = console_app(net, tmp_path)
        async with app.run_test(size=SIZE, notifications=True) as pilot:  # type: ignore[attr-defined]
            await wait_until(pilot, lambda: server in app.peers.peer_ids(), what="the server known")  # type: ignore[attr-defined]
            await open_palette(pilot, app)
            field = app.screen.query_one(CommandInput)  # type: ignore[attr-defined]
            await pilot.press("p", "i", "tab")
            await wait_until(pilot, lambda: field.value == "ping ", timeout=10, what="'pi' completed to 'ping '")
            assert isinstance(app.screen.focused, CommandInput)  # type: ignore[attr-defined]
            await pilot.press(*server[:14], "tab")
            await wait_until(pilot, lambda: field.value == f"ping {server}", timeout=10,
                             what="the server's peer id completed")
            await wait_palette_hit(pilot, app, f"ping {server}")
            await pilot.press("enter")
            await wait_until(pilot, lambda: f"ping {short_id(server)}:" in screen_text(app), timeout=20,
                             what="the ping's answer (a toast)")
            await pilot.press("q")

    run(scenario())


def test_tab_completes_a_peer_id_in_the_dial_prompt(net: ClientListenerNet, tmp_path: Path) -> None:
    """The dial prompt (palette → Dial a peer): tab fills in a known peer id; Enter on a
    half-typed id is an inline error, not a dial."""
    server = net.server.peer_id

    async def scenario() -> None:
        app = console_app(net, tmp_path)
        async with app.run_test(size=SIZE, notifications=True) as pilot:  # type: ignore[attr-defined]
            await wait_until(pilot, lambda: server in app.peers.peer_ids(), what="the server known")  # type: ignore[attr-defined]
            await open_palette(pilot, app)
            await pilot.press(*"Dial")
            await wait_palette_hit(pilot, app, "Dial a peer")
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), timeout=10, what="the dial prompt")  # type: ignore[attr-defined]
            field = app.screen.query_one("#prompt-input")  # type: ignore[attr-defined]
            await pilot.press(*server[:10], "enter")
            await wait_until(pilot, lambda: "not a whole peer id" in screen_text(app), timeout=10,
                             what="the inline error for a half-typed id")
            assert isinstance(app.screen, PromptScreen)  # type: ignore[attr-defined]
            await pilot.press("tab")
            await wait_until(pilot, lambda: field.value == server, timeout=10, what="tab completed the id")
            assert app.screen.focused is field  # type: ignore[attr-defined]
            await pilot.press("enter")
            await wait_until(pilot, lambda: "✓ connected to" in screen_text(app), timeout=20,
                             what="the dial's result (a toast)")
            await pilot.press("q")

    run(scenario())
