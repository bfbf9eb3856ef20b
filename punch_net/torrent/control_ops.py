"""The torrent manager on the control socket: `torrent.snapshot`, `torrent.add`,
`torrent.pause`, `torrent.resume`, `torrent.cancel`, `torrent.verify`, `torrent.catalogue`.

So `punch-tui --attach` (and scripts) get the same Transfers tab as the console that runs
the node: rows with pieces maps and per-peer rates, keys, the catalogue and "Download…".
Imported by the torrent manager, which registers the ops once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from punch_net.ops.control import ControlError, register_op
from punch_net.torrent.metainfo import parse_info_hash

if TYPE_CHECKING:
    from punch_net.node import Node
    from punch_net.torrent.manager import TorrentManager


def _manager(node: Node) -> TorrentManager:
    mgr = getattr(node, "torrent", None)
    if mgr is None:
        raise ControlError("no_torrent", "this node runs no torrent manager (start a torrent role)")
    return mgr  # type: ignore[no-any-return]


def _info_hash(args: dict[str, Any]) -> bytes:
    value = args.get("info_hash")
    if not isinstance(value, str):
        raise ControlError("bad_args", "'info_hash' (64 hex digits) is required")
    try:
        return parse_info_hash(value)
    except ValueError as exc:
        raise ControlError("bad_args", str(exc)) from None


async def _snapshot(node: Node, args: dict[str, Any]) -> Any:
    return [dataclasses.asdict(info) for info in _manager(node).snapshot()]


async def _add(node: Node, args: dict[str, Any]) -> Any:
    try:
        transfer = _manager(node).add(_info_hash(args))
    except (ValueError, RuntimeError) as exc:
        raise ControlError("failed", str(exc)) from None
    return {"info_hash": transfer.hex, "state": transfer.state}


def _on_transfer(method: str) -> Callable[[Node, dict[str, Any]], Awaitable[Any]]:
    async def op(node: Node, args: dict[str, Any]) -> Any:
        mgr, info_hash = _manager(node), _info_hash(args)
        try:
            result = getattr(mgr, method)(info_hash)
            if method == "verify":
                return {"bad_pieces": await result}
        except KeyError as exc:
            raise ControlError("not_found", str(exc.args[0]) if exc.args else "no such transfer") from None
        return {"ok": True}

    return op


async def _catalogue(node: Node, args: dict[str, Any]) -> Any:
    timeout = args.get("timeout")
    if timeout is not None and not (isinstance(timeout, int | float) and not isinstance(timeout, bool)
                                    and 0 < timeout <= 300):
        raise ControlError("bad_args", "'timeout' must be a number of seconds in (0, 300]")
    return [dataclasses.asdict(e) for e in await _manager(node).catalogue(timeout)]


def register() -> None:
    register_op("torrent.snapshot", _snapshot)
    register_op("torrent.add", _add)
    for method in ("pause", "resume", "cancel", "verify"):
        register_op(f"torrent.{method}", _on_transfer(method))
    register_op("torrent.catalogue", _catalogue)
