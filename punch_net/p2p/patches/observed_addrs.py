"""Observed addresses: py-libp2p's rule leaves a 1:1-NATed node advertising only its
private address; this hook lets Punch's own rule (punch_net/reach/observed.py) decide.

Bug: `ObservedAddrManager` advertises an observed address only once 4 observers with
distinct IP addresses report it (`ACTIVATION_THRESHOLD`), so a cloud VM seen at its public
address by two peers in two networks keeps advertising its private address and outside
peers cannot dial it; and its port-ignoring second matching pass files outbound
observations (ephemeral ports, which nobody can dial) under the listen address.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/host/observed_addr_manager.py#L32;
no upstream issue found.

Fix: wrap the host's manager's `record_observation` / `remove_conn` to hand each
observation (and each closed connection) to a callback as well; py-libp2p's own table is
kept (the relay's hole-punch prediction reads it), and `AdvertisedAddrs` ignores the
candidates it adds to `host.get_addrs()` (it reads the transport addresses itself).
Per host; False if the host has no manager (identify address discovery disabled).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import multiaddr
from libp2p.abc import IHost, INetConn

OnObserved = Callable[[INetConn, multiaddr.Multiaddr], None]
OnClosed = Callable[[INetConn], None]


def install(host: IHost, on_observed: OnObserved, on_closed: OnClosed) -> bool:
    manager: Any = getattr(host, "_observed_addr_manager", None)
    if manager is None:
        return False
    if getattr(manager, "_punch_hooked", False):
        return True
    record, remove = manager.record_observation, manager.remove_conn

    def record_observation(conn: INetConn, observed_addr: multiaddr.Multiaddr,
                           local_addrs: list[multiaddr.Multiaddr]) -> None:
        record(conn, observed_addr, local_addrs)
        try:
            on_observed(conn, observed_addr)
        except Exception:  # a bad observation must never break identify
            pass

    def remove_conn(conn: INetConn) -> None:
        remove(conn)
        on_closed(conn)

    manager.record_observation = record_observation
    manager.remove_conn = remove_conn
    manager._punch_hooked = True
    return True
