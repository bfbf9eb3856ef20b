"""Node roles: each is `async def run(node) -> exit code`, composed from node capabilities."""

from __future__ import annotations

from punch_net.node import Role
from punch_net.roles.dialer import run_dialer
from punch_net.roles.listener import run_listener
from punch_net.roles.server import run_server

ROLES: dict[str, Role] = {
    "server": run_server,
    "listener": run_listener,
    "dialer": run_dialer,
}
