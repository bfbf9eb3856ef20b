"""What the UI knows about other peers (from snapshots and events), for completion
in the palette and the compose bar, and the pure input checks both use."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from punch_net import events as ev
from punch_net.api import Snapshot
from punch_net.p2p.addresses import AddressError, is_peer_id, parse_dial_target

COMMAND_NAME_MAX = 64


class InputError(ValueError):
    """User input that cannot be used; the message is shown inline."""


class PeerBook:
    """peer id -> known addresses, plus whether we are connected now."""

    def __init__(self) -> None:
        self.addrs: dict[str, list[str]] = {}
        self.connected: set[str] = set()
        self.me = ""

    def learn(self, peer_id: str, addrs: list[str] | None = None) -> None:
        if not peer_id or peer_id == self.me:
            return
        known = self.addrs.setdefault(peer_id, [])
        for a in addrs or []:
            if a and a not in known:
                known.append(a)

    def update_snapshot(self, snap: Snapshot) -> None:
        if snap.stats is not None:
            self.me = snap.stats.peer_id
        self.connected = {c.peer_id for c in snap.connections}
        for c in snap.connections:
            self.learn(c.peer_id, [c.remote_addr])
        if snap.routing is not None:
            for b in snap.routing.buckets:
                for p in b.peers:
                    self.learn(p.peer_id, p.addrs[:3])

    def handle_event(self, e: ev.Event) -> None:
        if isinstance(e, ev.Discovered):
            self.learn(e.peer_id, e.addrs)
        elif isinstance(e, ev.PeerConnected):
            self.learn(e.peer_id, [e.addr])

    def peer_ids(self) -> list[str]:
        """Connected peers first, then the rest, each group sorted."""
        return sorted(self.addrs, key=lambda p: (p not in self.connected, p))

    def dial_addrs(self) -> list[str]:
        """Full dialable addresses (`.../p2p/ID`) of known peers, connected first."""
        out = []
        for p in self.peer_ids():
            for a in self.addrs[p]:
                if "/tcp/" in a:
                    out.append(a if "/p2p/" in a else f"{a}/p2p/{p}")
        return out

    def dial_targets(self) -> list[str]:
        """What the dial prompt completes: known peer ids (dialed by id: looked up by the
        node), then their full addresses, then the ids as `/p2p/ID`."""
        ids = self.peer_ids()
        return ids + self.dial_addrs() + [f"/p2p/{p}" for p in ids]

    def resolve(self, text: str) -> str:
        """A full peer id, or a unique prefix/suffix of a known one (short ids shown as …XYZ)."""
        text = text.strip().lstrip("…").strip()
        if not text:
            raise InputError("choose a peer (tab completes known peer ids)")
        if text in self.addrs:
            return text
        hits = [p for p in self.addrs if p.startswith(text) or p.endswith(text)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InputError(f"'{text}' matches {len(hits)} peers; type more of the id")
        if len(text) >= 46 and text[:2] in ("12", "Qm"):
            if not is_peer_id(text):
                raise InputError(f"'{text}' is not a valid peer id")
            return text  # a well-formed id we have not met: the node will try
        raise InputError(f"unknown peer '{text}'")


def complete(text: str, options: Sequence[str]) -> str | None:
    """Tab completion of `text` among `options` (in their order of preference): the first
    option that starts with it (case-insensitive, as the grey suggestion shows it), else
    the one option that ends with it (ids are shown short, as 12D3…XYZ). None: no match."""
    if text:
        lowered = text.lower()
        for option in options:
            if option.lower().startswith(lowered) and option != text:
                return option
    tail = text.strip().lstrip("…")
    if tail and text not in options:
        ends = [o for o in options if o.rstrip().endswith(tail) and o != text]
        if len(ends) == 1:
            return ends[0]
    if not text and options:
        return options[0]
    return None


def check_dial(text: str) -> str:
    """Validate a dial target (a peer id, or a multiaddr by the node's own parser); return
    it stripped. A peer id alone is looked up by the node (routing table, peerstore, DHT)."""
    text = text.strip()
    if not text:
        raise InputError("type a peer id or a multiaddr, e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo…")
    bare = text.removeprefix("/p2p/")
    if is_peer_id(bare):
        return text
    if "/" not in bare:
        raise InputError(f"'{bare}' is not a whole peer id (tab completes known ones), "
                         "nor a multiaddr (/ip4/HOST/tcp/PORT or /ip4/HOST/tcp/PORT/p2p/ID)")
    try:
        parse_dial_target(text)
    except AddressError as exc:
        raise InputError(str(exc)) from None
    return text


def check_info_hash(text: str) -> str:
    """An info hash as typed: 64 hex digits (spaces around are fine) -> lower-case hex."""
    value = text.strip().lower()
    if not value:
        raise InputError("type an info hash (64 hex digits)")
    if len(value) != 64:
        raise InputError(f"an info hash is 64 hex digits, this is {len(value)} characters")
    bad = next((c for c in value if c not in "0123456789abcdef"), None)
    if bad is not None:
        raise InputError(f"an info hash is hexadecimal; {bad!r} is not a hex digit")
    return value


def check_command(command: str, payload: str) -> tuple[str, dict[str, Any]]:
    """(command, args): `message` takes plain text, anything else a JSON object (or nothing)."""
    command = command.strip() or "message"
    if len(command) > COMMAND_NAME_MAX or not command.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise InputError(f"bad command name '{command[:COMMAND_NAME_MAX]}'")
    payload = payload.strip()
    if command == "message" and not payload.startswith("{"):
        if not payload:
            raise InputError("type the message text")
        return command, {"text": payload}
    if not payload:
        return command, {}
    try:
        args = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise InputError(f"args are not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(args, dict):
        raise InputError("args must be a JSON object, e.g. {\"text\": \"hi\"}")
    return command, args
