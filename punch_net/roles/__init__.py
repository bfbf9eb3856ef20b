"""Node roles: each role's name, help and its own command-line flags. `punch ROLE` and
`punch-tui --role ROLE` are both built from this table; what each role *runs* is the
role table of the composition root (punch_net/runtime.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

from punch_net.config import NodeConfig
from punch_net.roles import dialer, monitor, torrent_client, torrent_server
from punch_net.torrent import NAMESPACE as TORRENT_NAMESPACE


@dataclass(frozen=True)
class RoleSpec:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    # Copy the role's own flags from parsed args into the config (flags override the file).
    configure: Callable[[NodeConfig, argparse.Namespace], None] = lambda cfg, args: None
    default_bootstrap: bool = True  # False: no bootstrap unless given (the server)
    namespace: str | None = None  # the namespace the role provides and searches, whatever --namespace says
    aliases: list[str] = field(default_factory=list)


ROLES: dict[str, RoleSpec] = {
    "server": RoleSpec("server", "bootstrap node (DHT server)", default_bootstrap=False),
    "listener": RoleSpec("listener", "join the DHT, announce a namespace, answer JSON commands"),
    "dialer": RoleSpec("dialer", "find peers of a namespace through the DHT and send them messages",
                       dialer.add_arguments, dialer.configure),
    "monitor": RoleSpec("monitor", "DHT server and relay that maps the network (crawler, capabilities)",
                        monitor.add_arguments, monitor.configure),
    "torrent-server": RoleSpec("torrent-server", "share the files of a directory over /punch/torrent/1.0.0",
                               torrent_server.add_arguments, torrent_server.configure,
                               namespace=TORRENT_NAMESPACE, aliases=["torrent_server"]),
    "torrent-client": RoleSpec("torrent-client", "list shared files, or download one by info hash",
                               torrent_client.add_arguments, torrent_client.configure,
                               namespace=TORRENT_NAMESPACE, aliases=["torrent_client"]),
}
# Other names a role answers to (the seed's binaries were torrent_server, torrent_client).
ROLE_ALIASES: dict[str, str] = {alias: spec.name for spec in ROLES.values() for alias in spec.aliases}


def role_name(name: str) -> str:
    """The role a name (or an alias) stands for; unknown names are returned unchanged."""
    return ROLE_ALIASES.get(name, name)
