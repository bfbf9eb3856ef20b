"""The seed's binary names `torrent_server` / `torrent_client` are aliases of the roles, in
`punch ROLE` and in `punch-tui --role` (parsing only: no node starts here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from punch_net.cli.main import build_parser, config_from_args
from punch_net.roles import ROLE_ALIASES, ROLES, role_name
from punch_tui.main import _role_from
from punch_tui.main import build_parser as tui_parser

REPO = Path(__file__).resolve().parents[2]


def test_aliases_name_roles() -> None:
    assert ROLE_ALIASES == {"torrent_server": "torrent-server", "torrent_client": "torrent-client"}
    assert all(role in ROLES for role in ROLE_ALIASES.values())
    assert role_name("torrent_client") == "torrent-client" and role_name("listener") == "listener"


@pytest.mark.parametrize("alias", ["torrent_server", "torrent-server"])
def test_punch_accepts_the_seed_name(alias: str, tmp_path: Path) -> None:
    args = build_parser().parse_args([alias, "--share-dir", str(tmp_path)])
    role = role_name(args.role)
    cfg = config_from_args(args, role)
    assert role == cfg.role == "torrent-server" and cfg.share_dir == tmp_path


def test_punch_tui_accepts_the_seed_name(tmp_path: Path) -> None:
    argv = ["--role", "torrent_client", "--info-hash", "ab" * 32, "--download-dir", str(tmp_path)]
    assert _role_from(argv) == "torrent-client"
    args = tui_parser(_role_from(argv)).parse_args(argv)  # the role's own flags are known
    cfg = config_from_args(args, role_name(args.role))
    assert cfg.role == "torrent-client" and cfg.download_dir == tmp_path


@pytest.mark.parametrize("prog", [["punch_net.cli", "torrent_server"], ["punch_tui.main", "--role=torrent_server"]])
def test_alias_errors_name_the_role(prog: list[str], tmp_path: Path) -> None:
    """Through the real entry points: the alias reaches the role's own checks (one line, exit 2)."""
    res = subprocess.run([sys.executable, "-m", *prog, "--share-dir", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "share directory" in res.stderr, res.stderr
