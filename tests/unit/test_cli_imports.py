"""`punch ROLE` imports only what the role needs (issue 13, fixed costs): no tool, no
component of another role, nothing the import guard stubs or defers, no rich with --json.
Parsing only: no node starts here."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from punch_net.cli.main import EXTRA_COMMANDS, build_parser

NOT_FOR_A_TORRENT_CLIENT = (
    "punch_testnet.main", "punch_net.ops.remote", "punch_net.dht.crawler", "punch_net.reach.mdns",
    "punch_net.reach.portmap", "punch_net.cli.render", "rich.markup", "rich.progress",
    "Crypto", "pycparser", "coincurve", "fastecdsa", "cryptography.x509",
    "punch_net.ops.wire", "cattrs",  # the control socket's wire form: loaded when a client connects
    "punch_net.ops.metrics", "prometheus_client",  # only with --metrics-port
    "tomllib", "tomli_w",  # only with --config / `punch config`
)

LOADED = textwrap.dedent("""
    import sys
    from punch_net.p2p import import_guard
    import_guard.install()
    from punch_net.cli import main
    args = main.build_parser(sys.argv[1:]).parse_args(sys.argv[1:])
    cfg = main.config_from_args(args, args.role)
    main.Printer(True, cfg)
    print(" ".join(m for m in sys.modules if not isinstance(sys.modules[m], import_guard.StubModule)))
""")


def test_a_json_torrent_client_loads_no_module_it_does_not_use(tmp_path: object) -> None:
    argv = ["torrent-client", "--info-hash", "ab" * 32, "--download-dir", str(tmp_path), "--no-seed", "--json"]
    proc = subprocess.run([sys.executable, "-c", LOADED, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(proc.stdout.split())
    assert "punch_net.torrent.transfer" in loaded  # what it does need
    assert not [m for m in NOT_FOR_A_TORRENT_CLIENT if m in loaded]


def test_extra_commands_are_parsed_when_named() -> None:
    from punch_testnet import main as testnet

    assert EXTRA_COMMANDS["testnet"] == ("punch_testnet.main", testnet.HELP)
    args = build_parser(["testnet", "--nodes", "3"]).parse_args(["testnet", "--nodes", "3"])
    assert args.role == "testnet" and args.nodes == 3
