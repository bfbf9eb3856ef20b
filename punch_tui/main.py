"""`punch-tui --role ROLE [the flags of punch ROLE] [--theme NAME]`: parse, check, run.

Bad flags or config give one line on stderr and exit 2, before the terminal is taken
over; a node failure after start is shown on the error screen (exit 1)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from punch_net.cli.main import EXIT_USAGE, OneLineParser, add_node_flags, config_from_args
from punch_net.config import ConfigError, default_config_path, read_config_file
from punch_net.p2p.addresses import AddressError
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.roles import role_name
from punch_tui.themes import DEFAULT_THEME, load_themes, resolve_name


def build_parser(role: str | None) -> OneLineParser:
    from punch_net.roles import ROLE_ALIASES, ROLES

    parser = OneLineParser(
        prog="punch-tui",
        description="Punch node console: run a node in ROLE and watch it (same flags as `punch ROLE`).",
    )
    parser.add_argument("--role", choices=sorted([*ROLES, *ROLE_ALIASES]), default="listener",
                        help="node role (default listener)")
    parser.add_argument("--theme", help="punch-dark (default), punch-light, punch-high-contrast, or any "
                                        "Textual theme; saved to the config file when changed in the app")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    parser.add_argument("--attach", nargs="?", const="", metavar="SOCKET|DIR|ROLE",
                        help="open the console on a RUNNING node through its control socket (a socket path, a "
                             "data dir, or the role of a node in the data dir; default: the data dir's only "
                             "node, or ask); quitting leaves the node running")
    # a browser session's console under punch_tui.web (PID: that server): ends with it and with the node
    parser.add_argument("--web-session", type=int, metavar="PID", help=argparse.SUPPRESS)
    add_node_flags(parser, role or "listener")
    if role in ROLES:
        ROLES[role].add_arguments(parser)
    return parser


def _role_from(argv: Sequence[str]) -> str | None:
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--role" and i + 1 < len(args):
            return role_name(args[i + 1])
        if arg.startswith("--role="):
            return role_name(arg.split("=", 1)[1])
    return None


def _saved_theme(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        value = read_config_file(path).get("tui", {}).get("theme")
    except ConfigError:
        return None
    return value if isinstance(value, str) else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_libp2p_logging()
    parser = build_parser(_role_from(argv))
    args = parser.parse_args(argv)
    args.role = role_name(args.role)  # an alias (torrent_server) names its role
    try:
        cfg = config_from_args(args, args.role)
    except (ConfigError, AddressError) as exc:
        sys.stderr.write(f"punch-tui: error: {exc}\n")
        return EXIT_USAGE
    config_path: Path = args.config or default_config_path()
    themes, theme_errors = load_themes()
    for err in theme_errors:
        sys.stderr.write(f"punch-tui: warning: theme {err}\n")
    from textual.theme import BUILTIN_THEMES

    available = {t.name for t in themes} | set(BUILTIN_THEMES)
    name = resolve_name(args.theme or _saved_theme(config_path) or DEFAULT_THEME)
    if name not in available:
        if args.theme:
            sys.stderr.write(f"punch-tui: error: unknown theme '{args.theme}' "
                             f"(choose from {', '.join(sorted(available))})\n")
            return EXIT_USAGE
        name = DEFAULT_THEME if DEFAULT_THEME in available else "textual-dark"

    if args.attach is not None:
        from punch_tui.attach import AttachError, ask, read_hello, resolve_socket

        # several nodes in the data dir: a terminal user picks one, a script gets the list
        choose = ask(sys.stdin, sys.stderr) if sys.stdin.isatty() and sys.stderr.isatty() else None
        try:
            sock = resolve_socket(args.attach or None, cfg.data_dir, choose)
            hello = read_hello(sock)
        except AttachError as exc:
            sys.stderr.write(f"punch-tui: error: {exc}\n")
            return EXIT_USAGE
        from punch_tui.app import PunchApp

        cfg.role = str(hello.get("role") or cfg.role)  # the title and the palette follow the node's role
        if args.web_session is not None:
            from punch_tui.lifecycle import end_with_parent

            end_with_parent(args.web_session)
        app = PunchApp(cfg, attach=sock, theme_name=name, themes=themes, config_path=config_path,
                       poll_interval=args.poll, web_session=args.web_session is not None)
        app.run()
        return int(app.return_code or 0)

    from punch_net.config import prepare_data_dir
    from punch_tui.app import PunchApp

    try:
        prepare_data_dir(cfg)  # before the terminal is taken over: one line, exit 2
    except ConfigError as exc:
        sys.stderr.write(f"punch-tui: error: {exc}\n")
        return EXIT_USAGE
    app = PunchApp(cfg, theme_name=name, themes=themes, config_path=config_path, poll_interval=args.poll)
    app.run()
    return int(app.return_code or 0)


if __name__ == "__main__":
    sys.exit(main())
