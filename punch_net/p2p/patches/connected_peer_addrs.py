"""A connected peer's addresses expire two hours after identify, connection or not.

Bug: identify stores a peer's listen addresses with a 2 h TTL (`identity/update.py`) and
nothing renews it while the connection lasts, so `peerstore.addrs()` then raises and
forgets them. A DHT server answers FIND_NODE for a peer it does not hold in its routing
table (a DHT-client listener connected to it) only while the peerstore still has that
peer's addresses (`KadDHT._do_handle_stream`), so after two hours such a listener can no
longer be found by its peer id. go-libp2p keeps a connected peer's addresses for as long
as it is connected (`ConnectedAddrTTL`). Fix: while a peer is connected, reading its
addresses renews them. Per host: wraps that host's `peerstore.addrs`.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/identity/update.py#L100 and
https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/kad_dht.py#L740; no upstream issue found.
"""

from __future__ import annotations

from libp2p.abc import IHost
from libp2p.peer.id import ID
from multiaddr import Multiaddr


def install(host: IHost) -> None:
    store = host.get_peerstore()
    if getattr(store, "_punch_connected_addrs", False):
        return
    network = host.get_network()
    original = store.addrs
    peer_data = getattr(store, "peer_data_map", None)
    if peer_data is None:  # another peerstore class: leave it alone
        return

    def addrs(peer_id: ID) -> list[Multiaddr]:
        data = peer_data.get(peer_id)
        if data is not None and data.get_addrs() and network.get_connections(peer_id):
            data.update_last_identified()  # connected: still current (go: ConnectedAddrTTL)
        return original(peer_id)

    store.addrs = addrs  # type: ignore[method-assign]
    store._punch_connected_addrs = True  # type: ignore[attr-defined]
