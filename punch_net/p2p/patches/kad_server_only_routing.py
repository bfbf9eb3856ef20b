"""A kad server puts client-mode peers in its routing table and hands them out.

Bug: the kad server adds every peer that opens a kad stream with
`skip_server_mode_check=True` (`KadDHT._do_handle_stream`), client-mode peers included,
and then returns them to others as servers they cannot query. Fix: only add a peer whose
identify says it serves `/ipfs/kad/1.0.0` (servers whose identify has not arrived yet are
added after identify by the node), and `evict_client_peers` drops ones already in. Per DHT.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/kad_dht.py#L632; no upstream issue found.
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.id import ID


def _known_protocols(host: IHost, peer: ID) -> list[str]:
    try:
        return [str(p) for p in host.get_peerstore().get_protocols(peer) or []]
    except Exception:
        return []


def install_server_only_routing(host: IHost, dht: Any) -> None:
    original = dht.add_peer

    async def add_peer(peer_id: ID, *, skip_server_mode_check: bool = False) -> bool:
        if str(KAD_PROTOCOL) not in _known_protocols(host, peer_id):
            return False
        return bool(await original(peer_id, skip_server_mode_check=True))

    dht.add_peer = add_peer


def evict_client_peers(host: IHost, dht: Any) -> int:
    """Drop routing-table peers that identify says are not kad servers (added before the
    fix, or by lookups). Returns how many were removed."""
    removed = 0
    for peer in list(dht.routing_table.get_peer_ids()):
        protocols = _known_protocols(host, peer)
        if protocols and str(KAD_PROTOCOL) not in protocols:
            removed += bool(dht.routing_table.remove_peer(peer))
    return removed
