"""The reachability component: feeds identify's observations to the observed-address
rule (observed.py) and advertises what it confirms, unless AutoNAT has found us private.

Observations count only on inbound connections (they arrive on a listen port), so a
confirmed address has already been dialed from two networks; AutoNAT's verdict, when it
says "private", still withholds it (the NAT may have closed since)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.abc import IHost, INetConn
from libp2p.rcmgr import Direction
from trio_typing import TaskStatus

from punch_net.p2p.addresses import is_public_ip
from punch_net.p2p.patches import observed_addrs
from punch_net.reach.observed import ObservedAddrs

if TYPE_CHECKING:
    from punch_net.node import Node

UPDATE_EVERY = 10.0


class ObservedAddrsService:
    """A node Component. `reachability()` gives AutoNAT's verdict ("public", "private",
    "unknown")."""

    def __init__(self, node: Node, reachability: Callable[[], str]) -> None:
        self.node = node
        self.reachability = reachability
        self.core = ObservedAddrs()

    def attach(self, host: IHost, dht: object) -> None:
        observed_addrs.install(host, self._observed, self._closed)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:  # votes of closed connections expire; AutoNAT's verdict may change
            await trio.sleep(UPDATE_EVERY)
            self.update()

    def _observed(self, conn: INetConn, observed: multiaddr.Multiaddr) -> None:
        remote = _remote_ip(conn)
        if remote is None:
            return
        inbound = getattr(conn, "direction", None) == Direction.INBOUND
        text = _thin_waist(observed)
        if text is not None and self.core.observe(conn, remote, text, on_listen_port=inbound,
                                                  public=is_public_ip(observed)):
            self.update()

    def _closed(self, conn: INetConn) -> None:
        self.core.closed(conn, time.monotonic())

    def update(self) -> None:
        confirmed = self.core.confirmed(time.monotonic())
        if self.reachability() == "private":
            confirmed = []
        self.node.addresses.set_observed([multiaddr.Multiaddr(a) for a in confirmed])


def _remote_ip(conn: INetConn) -> str | None:
    muxed = getattr(conn, "muxed_conn", None)
    get_remote = getattr(muxed, "get_remote_address", None)
    remote = get_remote() if callable(get_remote) else None
    return str(remote[0]) if isinstance(remote, tuple) and remote else None


def _thin_waist(addr: multiaddr.Multiaddr) -> str | None:
    """/ip4|ip6/IP/tcp/PORT of an observed address (None for anything else)."""
    protos = [p.name for p in addr.protocols()]
    if len(protos) < 2 or protos[0] not in ("ip4", "ip6") or protos[1] != "tcp":
        return None
    return f"/{protos[0]}/{addr.value_for_protocol(protos[0])}/tcp/{addr.value_for_protocol('tcp')}"
