"""Resource limits, modelled on go-libp2p's resource manager: `limits` (the config),
`manager` (pure accounting, unit-tested without sockets), `metrics` (the
`libp2p_rcmgr_*` Prometheus series). The adapters that enforce them on py-libp2p live in
punch_net/p2p/patches/ (`rcmgr_conn_gate`, `rcmgr_streams`) and messaging/protocol.py."""

from punch_net.rcmgr.limits import LIMIT_DOCS, Limits, limits_from
from punch_net.rcmgr.manager import Refusal, Reservation, ResourceManager

__all__ = ["LIMIT_DOCS", "Limits", "Refusal", "Reservation", "ResourceManager", "limits_from"]
