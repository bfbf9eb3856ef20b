"""`punch`: the headless command line for every role, with human or `--json` output."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import trio

from punch_net import __version__
from punch_net import events as ev
from punch_net import flag_types as cli_types
from punch_net.api import NodeError
from punch_net.cli.address_flags import add_address_flags, configure_addresses
from punch_net.cli.ops_flags import add_ops_flags, configure_ops
from punch_net.cli.relay_flags import add_relay_flags, configure_relay
from punch_net.cli.services import enable_headless_services
from punch_net.config import (
    DEFAULT_BOOTSTRAP,
    ConfigError,
    NodeConfig,
    apply_config,
    atomic_write,
    default_config_path,
    default_config_text,
    read_config_file,
)
from punch_net.dht.keys import namespace_cid
from punch_net.groups import first_error
from punch_net.p2p.addresses import AddressError, parse_dial_target
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.p2p.host import ListenError
from punch_net.p2p.identity import IdentityError
from punch_net.roles import ROLES, role_name
from punch_net.runtime import Runtime
from punch_net.torrent import events as tev

if TYPE_CHECKING:
    from rich.console import Console

    from punch_net.cli.progress import LiveProgress

EXIT_USAGE = 2
# stdout's reader went away (`punch ... | head -1`): 128 + SIGPIPE, the status a shell shows
# for a Unix tool that SIGPIPE ended (Python ignores SIGPIPE, so we exit with it ourselves).
EXIT_STDOUT_CLOSED = 128 + signal.SIGPIPE
Extend = Callable[[Runtime], None]

# Subcommands that are not node roles: name -> (module with add_arguments(parser) and
# main(args) -> exit code, one-line help). A tool registers here instead of editing the
# dispatcher. Its module is imported only when the command line names it (punch_testnet
# and the RemoteNode it builds cost 15-40 ms of every `punch` start).
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "testnet": ("punch_testnet.main", "start a local test network of N node processes on 127.0.0.1"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def add_node_flags(p: argparse.ArgumentParser, role: str) -> None:
    """The flags every role shares (also used by punch-tui)."""
    g = p.add_argument_group("network")
    g.add_argument("--listen-addr", help="interface to listen on (default 0.0.0.0)")
    port_default = "51820" if role == "server" else "0 = any free port"
    g.add_argument("--port", type=cli_types.port, help=f"TCP port (default {port_default})")
    g.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                   help=f"bootstrap node, repeatable, /p2p/ID optional "
                        f"(default {DEFAULT_BOOTSTRAP if role != 'server' else 'none'})")
    g.add_argument("--namespace", help="discovery namespace (default simple-chat)")
    g.add_argument("--dht-mode", choices=["auto", "server", "client"],
                   help="Kademlia mode (auto: client for the dialer, server otherwise)")
    g.add_argument("--dial-timeout", type=cli_types.positive, help="seconds before a dial gives up")
    i = p.add_argument_group("identity and config")
    i.add_argument("--data-dir", type=Path, help="state directory (default: platform data dir)")
    i.add_argument("--identity", type=Path, metavar="PATH", help="ed25519 key file to use")
    i.add_argument("--ephemeral", action="store_true", help="use a fresh key, save nothing")
    i.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    add_address_flags(p)
    add_relay_flags(p, role)
    add_ops_flags(p)


def build_parser(argv: Sequence[str] | None = None) -> OneLineParser:
    """`argv`: the command line to be parsed (default sys.argv[1:]); an extra command's
    own flags are added only when it names that command."""
    words = set(sys.argv[1:] if argv is None else argv)
    parser = OneLineParser(
        prog="punch",
        description="Punch: a peer-to-peer node on libp2p (Kademlia DHT, JSON commands).",
    )
    parser.add_argument("--version", action="version", version=f"punch {__version__}")
    sub = parser.add_subparsers(dest="role", metavar="ROLE", parser_class=OneLineParser)
    sub.required = True
    for spec in ROLES.values():
        p = sub.add_parser(spec.name, help=spec.help, description=spec.help, aliases=spec.aliases)
        add_node_flags(p, spec.name)
        p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
        spec.add_arguments(p)
    import importlib

    for name, (module_name, help_text) in EXTRA_COMMANDS.items():
        extra = sub.add_parser(name, help=help_text, description=help_text)
        if name in words:
            importlib.import_module(module_name).add_arguments(extra)
    cfg = sub.add_parser("config", help="write a commented default config file")
    cfg_sub = cfg.add_subparsers(dest="config_cmd", metavar="CMD", parser_class=OneLineParser)
    cfg_sub.required = True
    init = cfg_sub.add_parser("init", help="write the default config")
    init.add_argument("path", nargs="?", type=Path, help=f"(default {default_config_path()})")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def config_from_args(args: argparse.Namespace, role: str) -> NodeConfig:
    """defaults < config file < flags. Raises ConfigError / AddressError."""

    spec = ROLES[role]
    cfg = NodeConfig(role=role)
    if not spec.default_bootstrap:
        cfg.bootstrap = []
    if getattr(args, "config", None) is not None:
        apply_config(cfg, read_config_file(args.config))
        cfg.role = role
    for name in ("listen_addr", "port", "bootstrap", "namespace", "dht_mode", "dial_timeout",
                 "data_dir", "identity"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    if getattr(args, "ephemeral", False):
        cfg.ephemeral = True
    spec.configure(cfg, args)
    configure_addresses(cfg, args)
    configure_relay(cfg, args)
    configure_ops(cfg, args)
    for addr in cfg.bootstrap:
        parse_dial_target(addr)  # fail now, with one line, not later in a task
    return cfg


# ------------------------------------------------------------------ output


class StdoutClosed(Exception):
    """stdout's reader has gone (`punch ... | head -1`). Its own type: a BrokenPipeError
    from a peer's socket is a node error, and must not end `punch` quietly."""


class Printer:
    """Renders node events for humans (the seed's style) or as JSON lines."""

    def __init__(self, json_mode: bool, cfg: NodeConfig) -> None:
        self.json = json_mode
        self.cfg = cfg
        self._out: Console | None = None  # made on first use: --json never needs rich
        self._human: Callable[[ev.Event], str | None] | None = None  # the human wording (rich markup), not for --json
        if not json_mode:
            from punch_net.cli.render import human

            self._human = human
        # A download's live progress line (stderr); status lines go above it, never into it.
        # Imported here: rich's progress costs ~70 ms of imports a --json node does not need.
        self.live: LiveProgress | None = None
        if cfg.progress_bar and cfg.info_hash and not json_mode:
            from punch_net.cli.progress import LiveProgress

            self.live = LiveProgress(cfg.info_hash)

    @property
    def out(self) -> Console:
        if self._out is None:
            from rich.console import Console

            class PipeConsole(Console):
                def on_broken_pipe(self) -> None:
                    # rich's own exits (SystemExit 1) from inside the trio task; raise the
                    # error instead, so that `punch` ends the same way in both modes
                    self.quiet = True
                    raise BrokenPipeError(errno.EPIPE, "stdout closed")

            self._out = PipeConsole(highlight=False, soft_wrap=True)
        return self._out

    def header(self) -> None:
        if self.json:
            return
        try:
            self._header()
        except BrokenPipeError:
            raise StdoutClosed from None

    def _header(self) -> None:
        cfg = self.cfg
        self.out.print(f"[bold]=== Punch {cfg.role} ===[/bold]\n")
        self.out.print("Configuration:")
        self.out.print(f"  Listen:    {cfg.listen_addr}:{cfg.effective_port() or 'any'}")
        if cfg.role != "server" or cfg.bootstrap:
            self.out.print(f"  Bootstrap: {', '.join(cfg.bootstrap) or 'none'}")
        if cfg.role != "server":
            spec = ROLES.get(cfg.role)
            namespace = (spec.namespace if spec is not None else None) or cfg.namespace
            self.out.print(f"  Namespace: {namespace}  ({namespace_cid(namespace)})")
        ident = "ephemeral" if cfg.ephemeral else str(cfg.identity_path())
        self.out.print(f"  Identity:  {ident}")
        self.out.print(f"  DHT mode:  {'server' if cfg.is_dht_server() else 'client'}\n")

    def emit(self, event: ev.Event) -> None:
        try:
            self._emit(event)
        except BrokenPipeError:
            raise StdoutClosed from None

    def _emit(self, event: ev.Event) -> None:
        if self.json:
            sys.stdout.write(json.dumps(event.to_json(), default=str) + "\n")
            sys.stdout.flush()
            return
        live = self.live
        if live is not None and isinstance(event, tev.Progress):
            live.progress(event)
        elif live is not None and isinstance(event, tev.Complete):
            live.complete(event)  # the bar ends at 100 %, and the `complete` line goes below it
        line = self._human(event) if self._human is not None else ""
        if line:
            if live is not None and live.takes_status_lines():
                live.print(line)
            else:
                self.out.print(line)


async def cancel_on_signal(scope: trio.CancelScope) -> None:
    """ctrl+c or SIGTERM: cancel `scope`, so everything in it stops the structured way."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def run_role(cfg: NodeConfig, json_mode: bool, extend: Extend | None = None) -> int:
    rt = Runtime(cfg)
    enable_headless_services(rt)
    if extend is not None:
        extend(rt)
    printer = Printer(json_mode, cfg)
    printer.header()
    code = 0
    with rt.node.bus.subscribe(maxsize=10_000) as events:
        async with trio.open_nursery() as nursery:

            async def pump() -> None:
                async for event in events:
                    printer.emit(event)

            async def main() -> None:
                nonlocal code
                code = await rt.run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump)
            nursery.start_soon(cancel_on_signal, nursery.cancel_scope)
            if printer.live is not None:
                nursery.start_soon(printer.live.run, rt.api)
            nursery.start_soon(main)
        # The node has stopped: what it published last is queued already (publishing never
        # waits), so print it now instead of hoping a short sleep lets the pump catch up.
        while True:
            try:
                printer.emit(events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
    return code


def fail(message: str, json_mode: bool = False, code: int = EXIT_USAGE) -> int:
    if json_mode:
        try:
            sys.stdout.write(json.dumps({"event": "error", "message": message, "fatal": True}) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            detach_stdout()
    sys.stderr.write(f"punch: error: {message}\n")
    return code


def detach_stdout() -> None:
    """stdout's reader has gone: point fd 1 at /dev/null, so that the flush at exit does not
    raise again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None, extend: Extend | None = None) -> int:
    """`punch ...`; `extend` adds components to the node (a tool's own, e.g. the testnet agent)."""
    quiet_libp2p_logging()
    args = build_parser(argv).parse_args(argv)
    args.role = role_name(args.role)  # `punch torrent_server` is `punch torrent-server`
    if args.role == "config":
        return config_init(args.path or default_config_path(), args.force)
    if args.role in EXTRA_COMMANDS:
        import importlib

        return int(importlib.import_module(EXTRA_COMMANDS[args.role][0]).main(args))
    json_mode = bool(args.json)
    try:
        cfg = config_from_args(args, args.role)
    except (ConfigError, AddressError) as exc:
        return fail(str(exc), json_mode)
    try:
        try:
            return trio.run(run_role, cfg, json_mode, extend)
        except BaseExceptionGroup as group:  # run_role's nursery wraps the node's error
            raise first_error(group) from None
    except (ListenError, IdentityError, ConfigError, AddressError) as exc:
        return fail(str(exc), json_mode)
    except NodeError as exc:
        return fail(str(exc), json_mode, code=1)
    except StdoutClosed:
        # raised by the Printer, out of the nursery, which cancelled the node: it has
        # stopped the structured way; what is left to print has no reader
        detach_stdout()
        return EXIT_STDOUT_CLOSED
    except KeyboardInterrupt:
        return 130


def config_init(path: Path, force: bool) -> int:
    if path.exists() and not force:
        return fail(f"{path} exists (use --force to overwrite)")
    try:
        atomic_write(path, default_config_text().encode())
    except OSError as exc:
        return fail(f"cannot write {path}: {exc.strerror}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
