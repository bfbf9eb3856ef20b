"""torrent-client: without --info-hash, list the files torrent servers offer; with one,
download it from every provider (then seed it unless --no-seed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

from punch_net import events as ev
from punch_net.config import ConfigError, NodeConfig
from punch_net.flag_types import positive
from punch_net.node import Node
from punch_net.torrent import events as tev
from punch_net.torrent.manager import TorrentManager
from punch_net.torrent.metainfo import parse_info_hash

EXIT_FAILED = 1
DEFAULT_TIMEOUT = 10.0
# `punch torrent-client` exits once its node stops: closing each connection politely
# (py-libp2p closes them one after another) took 0.4 s after a download's `complete`, and
# any grace for it is spent in full (0.1 s was); the kernel closes the sockets at exit
# anyway. (Other roles, and the console, keep the polite close.)
EXIT_CLOSE_TIMEOUT = 0.0


async def run_torrent_client(node: Node, manager: TorrentManager) -> int:
    cfg = node.config
    code = 0
    if cfg.torrent_interactive:
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            if cfg.info_hash is not None:
                manager.add(parse_info_hash(cfg.info_hash))
        return 0
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        if cfg.info_hash is None:
            code = await _list(node, manager)
        else:
            code = await _download(node, manager, parse_info_hash(cfg.info_hash))
        nursery.cancel_scope.cancel()
    return code


async def _list(node: Node, manager: TorrentManager) -> int:
    entries = await manager.catalogue()
    for e in entries:
        node.bus.publish(tev.Available(name=e.name, size=e.size, info_hash=e.info_hash, providers=e.providers))
    if not entries:
        node.bus.publish(ev.ErrorEvent(
            message=f"no torrent server found within {manager.timeout:g}s", where="torrent"))
        return EXIT_FAILED
    return 0


async def _download(node: Node, manager: TorrentManager, info_hash: bytes) -> int:
    transfer = manager.add(info_hash)  # human mode: the CLI draws its progress (cli/progress.py)
    await transfer.done.wait()
    if transfer.state not in ("complete", "seeding"):
        return EXIT_FAILED
    if transfer.state == "seeding":
        await trio.sleep_forever()  # serve until interrupted (--no-seed exits here instead)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:

    g = parser.add_argument_group("torrent client")
    g.add_argument("--download-dir", type=Path, metavar="DIR", help="where files go (default: current directory)")
    g.add_argument("--info-hash", metavar="HEX", help="download this file (64 hex digits); without it, list files")
    g.add_argument("--timeout", type=positive,
                   help=f"seconds to wait for servers/providers before giving up (default {DEFAULT_TIMEOUT:g})")
    g.add_argument("--no-seed", action="store_true", help="exit after the download instead of serving it")


def configure(cfg: NodeConfig, args: argparse.Namespace) -> None:
    if getattr(args, "download_dir", None) is not None:
        cfg.download_dir = args.download_dir
    if cfg.download_dir is None:
        cfg.download_dir = Path.cwd()
    cfg.download_dir = cfg.download_dir.expanduser().absolute()
    if getattr(args, "info_hash", None) is not None:
        try:
            parse_info_hash(args.info_hash)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg.info_hash = args.info_hash.strip().lower()
        if not cfg.download_dir.is_dir():
            raise ConfigError(f"download directory {cfg.download_dir} does not exist or is not a directory")
    cfg.timeout = getattr(args, "timeout", None) or DEFAULT_TIMEOUT
    if getattr(args, "no_seed", False):
        cfg.no_seed = True
    # `punch` has --json; punch-tui builds the same flags without it and keeps the client up.
    cli = hasattr(args, "json")
    cfg.progress_bar = cli and not args.json
    cfg.torrent_interactive = not cli
    if cli:
        cfg.close_timeout = EXIT_CLOSE_TIMEOUT
