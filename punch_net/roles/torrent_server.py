"""torrent-server flags: share every regular file in --share-dir over /punch/torrent/1.0.0,
announced in the DHT by info hash and under the torrent namespace (the manager is
composed in punch_net/runtime.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from punch_net.config import ConfigError, NodeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("torrent server")
    g.add_argument("--share-dir", type=Path, metavar="DIR",
                   help="share every regular file directly inside DIR (and files added later); "
                        "required here or as [torrent] share_dir in the config file")


def configure(cfg: NodeConfig, args: argparse.Namespace) -> None:
    share = getattr(args, "share_dir", None)
    if share is not None:
        cfg.share_dir = share
    if cfg.share_dir is None:
        raise ConfigError("--share-dir is required (or share_dir in the [torrent] section of the config file)")
    cfg.share_dir = cfg.share_dir.expanduser()
    if not cfg.share_dir.is_dir():
        raise ConfigError(f"share directory {cfg.share_dir} does not exist or is not a directory")
