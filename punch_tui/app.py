"""PunchApp: the Textual node console. It owns one bridge (trio in guest mode: its own
node, or a running node's control socket with --attach) and through it one `NodeAPI`;
it fans node messages out to the tab widgets, and turns keys, the palette and the
compose bar into API calls that run in workers (the UI never waits on the network)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import CommandPalette
from textual.containers import Horizontal
from textual.theme import Theme
from textual.widgets import Header, Input, Label, TabbedContent, TabPane

from punch_net import events as ev
from punch_net.api import JSONObject, NodeAPI, PeerAddrs, Snapshot
from punch_net.cli.render import dial_progress
from punch_net.config import ConfigError, NodeConfig, update_config_file
from punch_tui.bridge import AttachBridge, BridgeError, LocalBridge, NodeBridge
from punch_tui.console import console
from punch_tui.format import failure, plural, short_id
from punch_tui.lifecycle import TERM_GRACE, TERM_GRACE_LOCAL, exit_on_sigterm
from punch_tui.messages import AttachStatus, NodeEvents, NodeStarted, NodeStopped, SnapshotReady
from punch_tui.palette import NodeCommands, PunchPalette
from punch_tui.peers import InputError, PeerBook, check_command, check_dial
from punch_tui.screens.error import NodeErrorScreen
from punch_tui.screens.help import HelpScreen
from punch_tui.screens.prompt import PromptScreen
from punch_tui.tabs.base import NodeTab
from punch_tui.tabs.connections import ConnectionsTab
from punch_tui.tabs.dht import DhtTab
from punch_tui.tabs.messages import MessagesTab
from punch_tui.tabs.network import NetworkTab
from punch_tui.tabs.overview import OverviewTab
from punch_tui.tabs.relay import RelayTab
from punch_tui.tabs.transfers import TransfersTab
from punch_tui.themes import DEFAULT_THEME
from punch_tui.widgets.keybar import KeyBar
from punch_tui.widgets.logview import LogEntry, LogView
from punch_tui.widgets.plots import NodeHistory
from punch_tui.widgets.table import FilterTable

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

T = TypeVar("T")
GC_THRESHOLDS = (20_000, 20, 1_000_000)  # young batches; full collections only from _idle_gc
IDLE_GC_INTERVAL = 15.0  # seconds between checks
IDLE_GC_QUIET = 3.0  # no key for this long: a full collection will not be noticed
IDLE_GC_FORCE = 300.0  # collect anyway after this long (someone typing non-stop)
HIDDEN_REFRESH = 5.0  # seconds between snapshot updates of tabs not on screen
TAB_IDS = ["overview", "dht", "connections", "messages", "transfers", "relay", "network"]


class FilterInput(Input):
    """The `/` filter field: esc clears the filter and returns to the table."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter")]

    def action_clear(self) -> None:
        console(self.app).clear_filter()


class PunchApp(App[int]):
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses elsewhere still find it
    TITLE = "Punch"
    COMMANDS = App.COMMANDS | {NodeCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        # ctrl+c quits, as in btop, k9s and lazygit (Textual's own only says "press ctrl+q");
        # a field with selected text still copies it: the focused widget's ctrl+c comes first.
        Binding("ctrl+c", "quit", "Quit", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("ctrl+p", "command_palette", "Palette", key_display="^p"),
        Binding("t", "next_theme", "Theme", show=False),
        *[Binding(str(i + 1), f"show_tab('{tab}')", f"Tab {tab}", show=False) for i, tab in enumerate(TAB_IDS)],
    ]

    def __init__(
        self,
        config: NodeConfig,
        *,
        attach: Path | None = None,
        key_pair: KeyPair | None = None,
        theme_name: str = DEFAULT_THEME,
        themes: list[Theme] | None = None,
        config_path: Path | None = None,
        poll_interval: float = 1.0,
        web_session: bool = False,
    ) -> None:
        """Run a node of `config` in this process, or with `attach` (a control socket)
        show a node that runs elsewhere; `config.role` then names the attached node's role.
        `web_session`: a browser session's console, which ends when the node goes away."""
        super().__init__()
        self.node_config = config
        self.bridge: NodeBridge = (AttachBridge(attach, self, poll_interval, retry=not web_session)
                                   if attach is not None
                                   else LocalBridge(config, self, poll_interval, key_pair))
        self.peers = PeerBook()
        self.my_addrs: list[str] = []
        self.config_path = config_path
        self.start_theme = theme_name
        self._persist_theme = False
        self._last_suggestions: list[str] = []
        self._dialing: dict[str, float] = {}  # peer id dialed from here -> when (its steps are shown)
        self.last_snapshot: Snapshot | None = None
        self.history = NodeHistory()  # every snapshot, whichever tab is shown: the plots' data
        self.exit_code = 0
        self._gc_saved: tuple[int, int, int] | None = None
        self._last_input = self._last_full_gc = time.monotonic()
        for theme in themes or []:
            self.register_theme(theme)

    # ---------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        with TabbedContent(id="tabs"):
            with TabPane("1 Overview", id="overview"):
                yield OverviewTab(self.node_config.role, id="tab-overview")
            with TabPane("2 DHT", id="dht"):
                yield DhtTab(id="tab-dht")
            with TabPane("3 Connections", id="connections"):
                yield ConnectionsTab(id="tab-connections")
            with TabPane("4 Messages", id="messages"):
                yield MessagesTab(id="tab-messages")
            with TabPane("5 Transfers", id="transfers"):
                yield TransfersTab(id="tab-transfers")
            with TabPane("6 Relay", id="relay"):
                yield RelayTab(id="tab-relay")
            with TabPane("7 Network", id="network"):
                yield NetworkTab(id="tab-network")
        with Horizontal(id="filter-bar"):
            yield Label("/")
            yield FilterInput(placeholder="filter the current table (esc clears)", id="filter-input", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.title = f"Punch · {self.node_config.role}"
        self.sub_title = "starting node…"
        if self.bridge.attached:
            self.title += " · attached"
            self.sub_title = "attaching…"
        if self.start_theme in self.available_themes:
            self.theme = self.start_theme
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        self._persist_theme = True
        exit_on_sigterm(self, TERM_GRACE if self.bridge.attached else TERM_GRACE_LOCAL)
        self.bridge.start()

    @property
    def tabs(self) -> list[NodeTab]:
        return list(self.query(NodeTab))

    def tab(self, name: str) -> NodeTab:
        return self.query_one(f"#tab-{name}", NodeTab)

    @property
    def transfers_tab(self) -> TransfersTab:
        return self.query_one("#tab-transfers", TransfersTab)

    @property
    def messages_tab(self) -> MessagesTab:
        return self.query_one("#tab-messages", MessagesTab)

    @property
    def active_tab(self) -> NodeTab:
        active = self.query_one("#tabs", TabbedContent).active or "overview"
        return self.query_one(f"#tab-{active}", NodeTab)

    # ---------------------------------------------------------------- node messages

    def on_node_started(self, msg: NodeStarted) -> None:
        self._tune_gc()
        self.peers.me = msg.peer_id
        self.my_addrs = msg.addrs
        self.sub_title = f"{short_id(msg.peer_id, 12)} · {len(msg.addrs)} addr"
        self.query_one("#tab-overview", OverviewTab).set_identity(msg.peer_id, msg.addrs)

    def on_node_events(self, msg: NodeEvents) -> None:
        for e in msg.events:
            self.peers.handle_event(e)
            if isinstance(e, ev.DialProgress) and e.peer_id in self._dialing:
                self._dial_step(e)
        for tab in self.tabs:
            tab.handle_events(msg.events)

    def on_snapshot_ready(self, msg: SnapshotReady) -> None:
        snap = msg.snapshot
        self.last_snapshot = snap
        self.history.add(snap)
        self.my_addrs = snap.listen_addrs
        self.peers.update_snapshot(snap)
        active = self.active_tab
        for tab in self.tabs:  # hidden tabs refresh less often: a 1,000-row table costs
            if tab is active or snap.ts - tab.snapshot_ts >= HIDDEN_REFRESH:
                tab.apply_snapshot(snap)
        suggestions = self.peers.peer_ids()
        if suggestions != self._last_suggestions:
            self._last_suggestions = suggestions
            self.messages_tab.set_peer_suggestions(suggestions)
        if snap.stats is not None:
            self.sub_title = (f"{short_id(snap.stats.peer_id, 12)} · {plural(snap.stats.connections, 'peer')} · "
                              f"DHT {snap.stats.routing_table_size}")

    def on_node_stopped(self, msg: NodeStopped) -> None:
        if self.bridge.attached:  # attached without retry (a web session): it ends with the node
            self.exit(1, return_code=1)
            return
        if msg.error:
            self.exit_code = 1
            self.sub_title = "node failed"
            self.push_screen(NodeErrorScreen("The node stopped with an error", msg.error))
        else:
            self.exit_code = msg.exit_code or 0
            self.sub_title = f"role finished (exit {msg.exit_code})"
            self.push_screen(NodeErrorScreen(
                "The role finished", f"'{self.node_config.role}' ended with exit code {msg.exit_code}; "
                                     "the node has stopped."))

    # ---------------------------------------------------------------- running commands

    def run_node(self, label: str, op: Callable[[NodeAPI], Awaitable[T]],
                 on_ok: Callable[[T], None] | None = None) -> None:
        """Run `op(api)` in a worker (on the trio side, through the bridge); report failure
        as a notification. `op` gets the API when it runs: attached, that is the current
        connection, not the one there was when the key was pressed."""

        async def work() -> None:
            try:
                result = await self.bridge.call(op, self.bridge.api)
            except BridgeError as exc:
                self.notify(failure(label, str(exc)), severity="error", timeout=6, markup=False)
                return
            except Exception as exc:  # NodeError and friends: one line
                self.notify(failure(label, str(exc)), severity="error", timeout=6, markup=False)
                self._log_error(failure(label, str(exc)))
                return
            if on_ok is not None:
                on_ok(result)

        self.run_worker(work(), group="node", exit_on_error=False)

    def _log_error(self, text: str) -> None:
        self.messages_tab.add_entries([LogEntry("error", f"! {text}", {"error": text})])

    def dial(self, addr: str) -> None:
        """Dial a multiaddr, or a peer id: the node looks that up, and its DialProgress
        events (routing table, peerstore, DHT, dialing) are shown as they come."""
        try:
            addr = check_dial(addr)
        except InputError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        peer = addr.removeprefix("/p2p/")
        if "/" in peer:
            self.notify(f"dialling {addr}…", timeout=3)
        else:
            self._dialing[peer] = time.monotonic()
        self.run_node(f"dial {short_id(peer) if '/' not in peer else addr}", lambda api: api.dial(addr),
                      on_ok=lambda peer: self.notify(f"✓ connected to {peer}", timeout=5))

    def _dial_step(self, e: ev.DialProgress) -> None:
        started = self._dialing.get(e.peer_id, 0.0)
        if e.stage in ("connected", "failed") or time.monotonic() - started > 120:
            self._dialing.pop(e.peer_id, None)  # the dial's own result says how it ended
            return
        self.notify(Text.from_markup(dial_progress(e)).plain, timeout=6, markup=False)

    def find_peers(self, namespace: str) -> None:
        def done(found: list[PeerAddrs]) -> None:
            ids = ", ".join(short_id(p.peer_id) for p in found) or "none"
            self.notify(f"'{namespace}': {len(found)} peer(s): {ids}", timeout=8)

        self.notify(f"looking up '{namespace}'…", timeout=3)
        self.run_node(f"find {namespace}", lambda api: api.find_peers(namespace), on_ok=done)

    def ping_peer(self, peer: str) -> None:
        self.run_node(f"ping {short_id(peer)}", lambda api: api.ping(peer),
                      on_ok=lambda rtt: self.notify(f"ping {short_id(peer)}: {rtt * 1000:.2f} ms", timeout=5))

    def disconnect_peer(self, peer: str) -> None:
        self.run_node(f"disconnect {short_id(peer)}", lambda api: api.disconnect(peer),
                      on_ok=lambda _: self.notify(f"disconnected {short_id(peer)}", timeout=4))

    def request_peer(self, peer: str, command: str, args: JSONObject) -> None:
        """Send a command; the sent line and the reply reach the Messages log as node events."""
        self.run_node(f"{command} to {short_id(peer)}", lambda api: api.request(peer, command, args))

    def download(self, info_hash: str, name: str = "") -> None:
        self.transfers_tab.download(info_hash, name)

    def send_to_peer(self, peer_text: str, command: str, payload: str) -> str | None:
        """From the compose bar: validate, send, return an inline error (or None)."""
        try:
            peer = self.peers.resolve(peer_text)
            command, args = check_command(command, payload)
        except InputError as exc:
            return str(exc)
        self.request_peer(peer, command, args)
        return None

    def copy_my_address(self, addr: str | None = None) -> None:
        addr = addr or (self.my_addrs[0] if self.my_addrs else None)
        if not addr:
            self.notify("the node is not listening yet", severity="warning")
            return
        self.copy_to_clipboard(addr)
        self.notify(f"copied {addr}", timeout=4)

    def switch_theme(self, name: str) -> None:
        if name not in self.available_themes:
            self.notify(f"no theme '{name}'", severity="error")
            return
        self.theme = name

    def _on_theme_changed(self, theme: Theme) -> None:
        if not self._persist_theme or self.config_path is None:
            return
        try:
            update_config_file(self.config_path, "tui", "theme", theme.name)
        except (ConfigError, OSError) as exc:
            self.notify(f"theme not saved: {exc}", severity="warning")

    # ---------------------------------------------------------------- prompts (from the palette)

    def open_prompt(self, verb: str, initial: str = "") -> None:
        book = self.peers
        if verb == "dial":
            self.push_screen(PromptScreen("Dial a peer id or multiaddr", check_dial, book.dial_targets(),
                                          "12D3Koo…  or  /ip4/127.0.0.1/tcp/4001[/p2p/12D3Koo…]", initial),
                             lambda v: self.dial(v) if v else None)
        elif verb == "find":
            def check_ns(text: str) -> str:
                if not text.strip():
                    raise InputError("type a namespace")
                return text.strip()

            self.push_screen(PromptScreen("Find peers of namespace", check_ns, [self.node_config.namespace],
                                          self.node_config.namespace, initial or self.node_config.namespace),
                             lambda v: self.find_peers(v) if v else None)
        elif verb == "ping":
            self.push_screen(PromptScreen("Ping peer", book.resolve, book.peer_ids(), "peer id", initial),
                             lambda v: self.ping_peer(v) if v else None)
        elif verb == "send":
            def check_send(text: str) -> str:
                peer_text, _, rest = text.strip().partition(" ")
                peer = book.resolve(peer_text)
                command, _, args = rest.partition(" ") if rest.split(" ", 1)[0].isidentifier() and \
                    rest.split(" ", 1)[0] != rest and rest.split(" ", 1)[1].lstrip().startswith("{") \
                    else ("message", "", rest)
                cmd, parsed = check_command(command, args)
                return json.dumps([peer, cmd, parsed])

            def sent(value: str | None) -> None:
                if value:
                    peer, cmd, parsed = json.loads(value)
                    self.request_peer(peer, cmd, parsed)

            self.push_screen(PromptScreen("Send: PEER text   or   PEER command {json}", check_send,
                                          [f"{p} " for p in book.peer_ids()], "peer text…",
                                          f"{initial} " if initial else ""), sent)
        elif verb == "download":
            self.transfers_tab.prompt_download(initial)
        elif verb == "catalogue":
            self.action_show_tab("transfers")
            self.transfers_tab.action_catalogue()
        elif verb == "theme":
            self.search_themes()
        elif verb == "copy":
            self.copy_my_address()

    # ---------------------------------------------------------------- keys

    def action_command_palette(self) -> None:
        if self.use_command_palette and not isinstance(self.screen, CommandPalette):
            self.push_screen(PunchPalette(id="--command-palette"))  # Textual's, plus tab completion

    def action_show_tab(self, name: str) -> None:
        self.query_one("#tabs", TabbedContent).active = name
        self._sync_filter_bar()

    def action_help(self) -> None:
        sections: list[tuple[str, list[BindingType]]] = [
            ("Everywhere", [*self.BINDINGS, Binding("1-7", "", "jump to tab 1…7"),
                            Binding("tab,shift+tab", "", "move focus")]),
            ("Tables (DHT, Connections, …)", [*FilterTable.BINDINGS,
                                               Binding("click header", "", "sort by that column")]),
            ("Logs (Overview events, Messages)", list(LogView.BINDINGS)),
        ]
        for tab in self.tabs:
            if tab.BINDINGS:
                sections.append((tab.TITLE, list(tab.BINDINGS)))
        self.push_screen(HelpScreen(sections))

    def action_filter(self) -> None:
        target = self.active_tab.filter_target()
        if target is None:
            self.notify("nothing to filter on this tab", severity="warning")
            return
        bar = self.query_one("#filter-bar")
        bar.add_class("active")
        field = self.query_one("#filter-input", Input)
        field.value = getattr(target, "filter_text", "")
        field.focus()

    @on(Input.Changed, "#filter-input")
    def _filter_changed(self, event: Input.Changed) -> None:
        target = self.active_tab.filter_target()
        if target is not None:
            target.set_filter(event.value)

    @on(Input.Submitted, "#filter-input")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        target = self.active_tab.filter_target()
        if target is not None:
            target.focus()
        self.call_after_refresh(self._sync_filter_bar)  # once the focus has left the field

    def clear_filter(self) -> None:
        self.query_one("#filter-input", Input).value = ""
        target = self.active_tab.filter_target()
        if target is not None:
            target.set_filter("")
            target.focus()
        self.call_after_refresh(self._sync_filter_bar)  # once the focus has left the field: the bar goes

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._sync_filter_bar()
        tab = self.active_tab
        if self.last_snapshot is not None and tab.snapshot_ts < self.last_snapshot.ts:
            self.call_after_refresh(tab.apply_snapshot, self.last_snapshot)  # after the switch is drawn
        target = tab.filter_target()
        if target is not None and not isinstance(self.focused, Input):
            target.focus()  # so the footer shows this tab's keys

    def _sync_filter_bar(self) -> None:
        target = self.active_tab.filter_target()
        text = getattr(target, "filter_text", "") if target is not None else ""
        bar = self.query_one("#filter-bar")
        field = self.query_one("#filter-input", Input)
        if text:
            bar.add_class("active")
            if field.value != text:
                field.value = text
        elif not field.has_focus:
            bar.remove_class("active")

    def action_next_theme(self) -> None:
        names = sorted(n for n in self.available_themes if n.startswith("punch-")) or sorted(self.available_themes)
        current = self.theme if self.theme in names else names[-1]
        self.switch_theme(names[(names.index(current) + 1) % len(names)])
        self.notify(f"theme {self.theme}", timeout=2)

    def _tune_gc(self) -> None:
        """Keep the cyclic collector's long pauses away from key presses.

        py-libp2p, Textual and their caches are ~150k long-lived objects: a full collection
        took 100-300 ms, and with the default thresholds one ran every few seconds under
        load. Freeze what exists after start-up, collect young objects in bigger batches,
        and run full collections ourselves when nobody has pressed a key for a while."""
        gc.collect()
        gc.freeze()
        self._gc_saved = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        self.set_interval(IDLE_GC_INTERVAL, self._idle_gc)

    def _idle_gc(self) -> None:
        now = time.monotonic()
        quiet = now - self._last_input >= IDLE_GC_QUIET
        if quiet or now - self._last_full_gc >= IDLE_GC_FORCE:
            gc.collect()
            self._last_full_gc = now

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown):  # the app sees every input first
            self._last_input = time.monotonic()
        await super().on_event(event)

    async def on_unmount(self) -> None:
        """However the app ends (quit, crash, test teardown), stop the node cleanly."""
        if self._gc_saved is not None:
            gc.set_threshold(*self._gc_saved)
            gc.unfreeze()
        if not self.bridge.finished:
            await self.bridge.stop(5.0)

    def on_attach_status(self, msg: AttachStatus) -> None:
        """--attach: the node went away (we keep retrying) or is back."""
        if msg.state == "connected":
            if self.bridge.reconnects:
                self.notify("attached again", timeout=3)
        else:
            self.sub_title = "disconnected, retrying…"

    async def action_quit(self) -> None:
        self.sub_title = "detaching (the node keeps running)…" if self.bridge.attached else "stopping node…"
        await self.bridge.stop()
        self.exit(self.exit_code, return_code=self.exit_code)
