"""Node roles. Each role is a `RoleSpec`: how to run it (`async def run(node) -> exit
code`, composed from node capabilities) and its own command-line flags. `punch ROLE`
and `punch-tui --role ROLE` are both built from this table, so a new role is one module
plus one entry here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

from punch_net.config import NodeConfig
from punch_net.node import Role
from punch_net.roles import dialer, listener, monitor, server, torrent_client, torrent_server


@dataclass(frozen=True)
class RoleSpec:
    name: str
    help: str
    run: Role
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    # Copy the role's own flags from parsed args into the config (flags override the file).
    configure: Callable[[NodeConfig, argparse.Namespace], None] = lambda cfg, args: None
    default_bootstrap: bool = True  # False: no bootstrap unless given (the server)
    aliases: list[str] = field(default_factory=list)


ROLES: dict[str, RoleSpec] = {
    "server": RoleSpec("server", "bootstrap node (DHT server)", server.run_server,
                       default_bootstrap=False),
    "listener": RoleSpec("listener", "join the DHT, announce a namespace, answer JSON commands",
                         listener.run_listener),
    "dialer": RoleSpec("dialer", "find peers of a namespace through the DHT and send them messages",
                       dialer.run_dialer, dialer.add_arguments, dialer.configure),
    "monitor": RoleSpec("monitor", "DHT server and relay that maps the network (crawler, capabilities)",
                        monitor.run_monitor, monitor.add_arguments, monitor.configure),
    "torrent-server": RoleSpec("torrent-server", "share the files of a directory over /punch/torrent/1.0.0",
                               torrent_server.run_torrent_server, torrent_server.add_arguments,
                               torrent_server.configure),
    "torrent-client": RoleSpec("torrent-client", "list shared files, or download one by info hash",
                               torrent_client.run_torrent_client, torrent_client.add_arguments,
                               torrent_client.configure),
}
