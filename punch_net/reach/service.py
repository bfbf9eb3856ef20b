"""The reachability component: feeds identify's observations to the observed-address
rule (observed.py) and advertises what it confirms, unless AutoNAT has found us private.

Observations count only on inbound connections (they arrive on a listen port), so a
confirmed address has already been dialed from two networks (or from one, once AutoNAT
has dialed us back: "public"); AutoNAT's "private" withholds it (the NAT may have closed
since)."""

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

UPDATE_EVERY = 2.0  # cheap; picks up AutoNAT's verdict and expired votes


class ObservedAddrsService:
    """A node Component. `reachability()` gives AutoNAT's verdict ("public", "private",
    "unknown"); `dialed_back()` the address an AutoNAT server last reached us at."""

    def __init__(self, node: Node, reachability: Callable[[], str],
                 dialed_back: Callable[[], str | None] = lambda: None) -> None:
        self.node = node
        self.reachability = reachability
        self.dialed_back = dialed_back
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
        verdict = self.reachability()
        confirmed = [] if verdict == "private" else self.core.confirmed(time.monotonic(), verdict == "public")
        # AutoNAT's dial-back reached us at a public address we do not listen on (a router
        # forwarding a port by hand): nobody else could vote for it before we advertise it
        back = self.dialed_back() if verdict == "public" else None
        back_tw = _thin_waist(multiaddr.Multiaddr(back)) if back else None
        if back_tw and back_tw not in confirmed and is_public_ip(multiaddr.Multiaddr(back_tw)):
            confirmed.append(back_tw)
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
