"""The swarm's AutoConnector dials every peerstore entry towards a full mesh.

Bug: it dials peerstore entries until it holds (low_watermark + high_watermark) / 2
connections (200 by default), and every DHT response fills the peerstore: this, not the
DHT, turns a network into a full mesh (50 nodes in one process: 2,158 connections).
Punch's connection manager decides which connections to keep; no blind dialing. Per host.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/network/auto_connector.py#L262
(`maybe_connect`); no upstream issue found.
"""

from __future__ import annotations

from libp2p.abc import IHost


def install(host: IHost) -> None:
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is None:
        return

    async def no_dials() -> None:
        return None

    connector.maybe_connect = no_dials
