"""Flags for the operational services every role has: metrics, control socket, web console.

Kept apart from punch_net/cli/main.py so that file only calls `add_ops_flags` / `configure_ops`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from punch_net import flag_types as cli_types
from punch_net.config import NodeConfig


def add_ops_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("operations")
    g.add_argument("--metrics-port", type=cli_types.port, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)")
    g.add_argument("--metrics-host", metavar="ADDR", help="interface for --metrics-port (default 127.0.0.1)")
    g.add_argument("--control-socket", type=Path, metavar="PATH",
                   help="control socket for punch-tui --attach (default DATA_DIR/control.sock)")
    g.add_argument("--no-control", action="store_true", help="do not serve a control socket")
    g.add_argument("--web-port", type=cli_types.port, metavar="PORT",
                   help="serve the console in a browser on this port, with the token printed at start "
                        "(default: 8080 for the monitor, falling back to a free port when busy; off for the "
                        "other roles; 0 = off)")
    g.add_argument("--web-host", metavar="ADDR",
                   help="interface for the web console (default 127.0.0.1; any other is reachable from "
                        "elsewhere: warned about at start)")


def configure_ops(cfg: NodeConfig, args: argparse.Namespace) -> None:
    for name in ("metrics_port", "metrics_host", "control_socket", "web_port", "web_host"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    if getattr(args, "no_control", False):
        cfg.control = False
