"""Command palette (ctrl+p) providers: node actions with completion from known peers.

Type a verb and its argument straight into the palette (`dial /ip4/…`, `ping 12D3…`,
`send 12D3… hello`, `find simple-chat`, `theme light`, `copy`), or pick an action to get
a prompt. Bad input is shown as a red hit explaining why, never an exception."""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from rich.markup import escape
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.command import CommandInput, CommandPalette, DiscoveryHit, Hit, Hits, Provider

from punch_net.api import JSONObject
from punch_tui.console import Console, console
from punch_tui.format import short_id
from punch_tui.peers import InputError, check_command, check_dial, check_info_hash, complete

MAX_COMPLETIONS = 12
TORRENT_VERBS = {"download", "catalogue"}  # only offered when the role runs a torrent manager

ACTIONS: list[tuple[str, str, str]] = [
    ("dial", "Dial a peer", "by peer id (looked up: routing table, peerstore, DHT) or /ip4/…/tcp/PORT/p2p/ID"),
    ("find", "Find peers of a namespace", "DHT provider lookup"),
    ("send", "Send a message or command to a peer", "send PEER text | send PEER cmd {json}"),
    ("ping", "Ping a peer", "libp2p ping, shows the RTT"),
    ("download", "Download…", "fetch a file by its info hash (64 hex digits) — torrent roles"),
    ("catalogue", "Browse catalogue", "files offered by torrent servers in the DHT; enter fetches one"),
    ("theme", "Switch theme", "saved in the config file"),
    ("copy", "Copy my address", "to the clipboard (OSC 52)"),
]


def error_hit(message: str, query: str) -> Hit:
    text = Text.assemble(("✗ ", "bold red"), (message, "red"))

    def noop() -> None:
        return None

    return Hit(1.0, text, noop, text=f"✗ {message}", help=escape(f"fix the input: {query}"))


class NodeCommands(Provider):
    """The node's actions; completions come from the app's PeerBook."""

    @property
    def punch(self) -> Console:
        return console(self.app)

    def _actions(self) -> list[tuple[str, str, str]]:
        torrent = self.punch.node_config.role.startswith("torrent")
        return [a for a in ACTIONS if torrent or a[0] not in TORRENT_VERBS]

    async def discover(self) -> Hits:
        for verb, title, help_text in self._actions():
            yield DiscoveryHit(title, partial(self.punch.open_prompt, verb), help=help_text)

    async def search(self, query: str) -> Hits:
        q = query.strip()
        verb, _, rest = q.partition(" ")
        verb = verb.lower()
        rest = rest.strip()
        if verb in {v for v, _, _ in self._actions()} and (rest or query.endswith(" ")):
            for hit in self._verb_hits(verb, rest):
                yield hit
            return
        matcher = self.matcher(q)
        for verb_name, title, help_text in self._actions():
            score = max(matcher.match(title), matcher.match(verb_name))
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.punch.open_prompt, verb_name),
                          text=title, help=help_text)

    def _dial_hit(self, target: str, score: float) -> Hit:
        app = self.punch
        by_id = "/" not in target.removeprefix("/p2p/")
        mark = "●" if target.removeprefix("/p2p/") in app.peers.connected else ""
        label = f"Dial {mark + ' ' if mark else ''}{target}" + ("  (peer id: looked up)" if by_id else "")
        return Hit(score, Text(label), partial(app.dial, target), text=f"dial {target}")

    def _verb_hits(self, verb: str, rest: str) -> list[Hit]:
        app = self.punch
        book = app.peers
        if verb == "dial":
            known = book.dial_targets()
            try:
                target = check_dial(rest)
            except InputError as exc:
                matching = [t for t in known if t.startswith(rest)] if rest else known
                if not matching:
                    return [error_hit(str(exc) if rest else "no known peers yet: type a peer id or a multiaddr",
                                      rest)]
                return [self._dial_hit(t, 0.9) for t in matching[:MAX_COMPLETIONS]]
            return [self._dial_hit(target, 1.0)]
        if verb == "find":
            ns = rest or app.node_config.namespace
            return [Hit(1.0, Text(f"Find peers of '{ns}'"), partial(app.find_peers, ns), text=f"find {ns}")]
        if verb in ("ping", "send"):
            peer_text, _, payload = rest.partition(" ")
            candidates = [p for p in book.peer_ids()
                          if not peer_text or p.startswith(peer_text) or p.endswith(peer_text.lstrip("…"))]
            if verb == "send" and payload:
                args: JSONObject
                try:
                    peer = book.resolve(peer_text)
                    if payload.startswith("{") or " {" in payload:
                        command, args = _split_command(payload)
                    else:
                        command, args = "message", {"text": payload}
                except InputError as exc:
                    return [error_hit(str(exc), rest)]
                return [Hit(1.0, Text(f"Send {command} to {short_id(peer)}: {payload}"),
                            partial(app.request_peer, peer, command, args), text=f"send {peer} {payload}")]
            if not candidates:
                return [error_hit(f"unknown peer '{peer_text}'" if peer_text else "no known peers yet", rest)]
            hits = []
            for p in candidates[:MAX_COMPLETIONS]:
                mark = "●" if p in book.connected else "·"
                if verb == "ping":
                    hits.append(Hit(0.9, Text(f"Ping {mark} {p}"), partial(app.ping_peer, p), text=f"ping {p}"))
                else:
                    hits.append(Hit(0.9, Text(f"Send to {mark} {p}…"), partial(app.open_prompt, "send", p),
                                    text=f"send {p}"))
            return hits
        if verb == "theme":
            names = sorted(app.available_themes)
            matching = [n for n in names if rest.lower() in n.lower()]
            if not matching:
                return [error_hit(f"no theme '{rest}'", rest)]
            return [Hit(1.0 if n.startswith("punch") else 0.8, Text(f"Theme: {n}"), partial(app.switch_theme, n),
                        text=f"theme {n}") for n in matching]
        if verb == "download":
            try:
                info_hash = check_info_hash(rest)
            except InputError as exc:
                return [error_hit(str(exc), rest)]
            return [Hit(1.0, Text(f"Download {info_hash}"), partial(app.download, info_hash),
                        text=f"download {info_hash}")]
        if verb == "catalogue":
            return [Hit(1.0, Text("Browse catalogue"), partial(app.open_prompt, "catalogue"), text="catalogue")]
        if verb == "copy":
            return [Hit(1.0, Text(f"Copy {a}"), partial(app.copy_my_address, a), text=f"copy {a}")
                    for a in app.my_addrs] or [error_hit("the node is not listening yet", rest)]
        return []


def completions(app: Console, query: str, verbs: list[str]) -> str | None:
    """What tab makes of the palette's text: a verb (`di` → `dial `), then the verb's
    argument among known peer ids, addresses, themes (peers.complete picks)."""
    verb, sep, rest = query.lstrip().partition(" ")
    if not sep:
        return complete(verb, [f"{v} " for v in verbs])
    verb = verb.lower()
    book = app.peers
    options: list[str]
    if verb == "dial":
        options = book.dial_targets()
    elif verb == "ping":
        options = book.peer_ids()
    elif verb == "send":
        if " " in rest.strip():
            return None  # past the peer: the message is free text
        options = [f"{p} " for p in book.peer_ids()]
    elif verb == "theme":
        options = sorted(app.available_themes)
    elif verb == "find":
        options = [app.node_config.namespace]
    elif verb == "copy":
        options = list(app.my_addrs)
    else:
        return None
    found = complete(rest.strip(), options)
    return None if found is None else f"{verb} {found}"


class PunchPalette(CommandPalette):
    """The command palette with tab completion of verbs and their arguments (Textual's
    palette has none: tab would move the focus to the list)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("tab", "complete", "Complete", show=False, priority=True)]

    def action_complete(self) -> None:
        field = self.query_one(CommandInput)
        punch = console(self.app)
        torrent = punch.node_config.role.startswith("torrent")
        verbs = [v for v, _, _ in ACTIONS if torrent or v not in TORRENT_VERBS]
        found = completions(punch, field.value, verbs)
        if found is not None:
            field.value = found
            field.cursor_position = len(found)


def _split_command(payload: str) -> tuple[str, dict[str, Any]]:
    """`cmd {json}` or `{json}` (a message with explicit args)."""
    if payload.startswith("{"):
        return check_command("message", payload)
    command, _, args = payload.partition(" ")
    return check_command(command, args)
