"""py-libp2p's GET_PROVIDERS query drops the closer peers' addresses, and drops providers
whose signed record is older than the one we hold.

Bugs: `ProviderStore._get_providers_from_peer_with_closers` returns closer peers as bare
ids without storing their addresses, so a walk made of GET_PROVIDERS alone cannot dial them
(that is why py-libp2p's `find_providers` first runs a whole FIND_NODE lookup); and its
record check (`maybe_consume_signed_record`) refuses a record older than ours, after which
the peer is dropped: a node whose addresses changed vanished from the answers of every node
that had cached its older record. Fix: the same message and signed-record checks, closer
peers' addresses go into the peerstore as FIND_NODE's do, an older (genuine) record is
accepted. Per DHT (`install`).
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/provider_store.py#L460
and https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/kad_dht/utils.py
(`maybe_consume_signed_record`); no upstream issue found.
"""

from __future__ import annotations

import time
from typing import Any

from libp2p.kad_dht.common import MAX_DHT_MESSAGE_SIZE
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.kad_dht.utils import maybe_consume_signed_record
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from punch_net.p2p.patches.kad_lookup_tracing import _trace

CLOSER_ADDR_TTL = 3600


def install(host: Any, dht: Any) -> None:
    dht.provider_store._get_providers_from_peer_with_closers = get_providers_query(host, dht)


def get_providers_query(host: Any, dht: Any) -> Any:
    """GET_PROVIDERS to one peer that keeps the closer peers' addresses.

    py-libp2p's `_get_providers_from_peer_with_closers` returns closer peers as bare ids
    and drops their addresses, so a walk made of GET_PROVIDERS alone cannot dial them;
    that is why its `find_providers` first runs a whole FIND_NODE lookup and only then
    asks for providers (two lookups, the first to convergence). Same message, same
    signed-record checks; the addresses go into the peerstore as FIND_NODE's do."""
    store = host.get_peerstore()
    me = host.get_id()

    async def query(peer_id: ID, key: bytes) -> tuple[list[PeerInfo], list[ID]]:
        providers: list[PeerInfo] = []
        closer: list[ID] = []
        trace = _trace.get()
        t0 = time.perf_counter()
        connected = bool(host.get_network().get_connections(peer_id))
        t_open = t_rpc = t0
        try:
            stream = await host.new_stream(peer_id, [KAD_PROTOCOL])
            t_open = time.perf_counter()
            try:
                msg = Message()
                msg.type = Message.MessageType.GET_PROVIDERS
                msg.key = key
                msg.senderRecord = env_to_send_in_RPC(host)[0]
                await stream.write(encode_varint_prefixed(msg.SerializeToString()))
                response = Message()
                response.ParseFromString(await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE))
                t_rpc = time.perf_counter()
            finally:
                await stream.close()
        except Exception as exc:
            if trace is not None:
                trace.step(peer=str(peer_id)[-8:], connected=connected, at_ms=_ms(t0 - trace.started),
                           open_ms=_ms(t_open - t0), rpc_ms=_ms(t_rpc - t_open) if t_rpc > t0 else None,
                           total_ms=_ms(time.perf_counter() - t0), error=type(exc).__name__)
            return [], []
        if trace is not None:
            trace.step(peer=str(peer_id)[-8:], connected=connected, at_ms=_ms(t0 - trace.started),
                       open_ms=_ms(t_open - t0), rpc_ms=_ms(t_rpc - t_open), total_ms=_ms(time.perf_counter() - t0),
                       providers=len(response.providerPeers), closer=len(response.closerPeers))
        if response.type != Message.MessageType.GET_PROVIDERS:
            return [], []
        if not maybe_consume_signed_record(response, host, peer_id):
            return [], []
        for proto in response.providerPeers:
            try:
                if record_acceptable(proto, host):
                    providers.append(PeerInfo(ID(proto.id), _addrs(proto.addrs)))
            except Exception:
                continue
        for proto in response.closerPeers:
            try:
                if not proto.id or not record_acceptable(proto, host):
                    continue
                peer = ID(proto.id)
            except Exception:
                continue
            if peer == me:
                continue
            addrs = _addrs(proto.addrs)
            if addrs:
                store.add_addrs(peer, addrs, CLOSER_ADDR_TTL)
            closer.append(peer)
        return providers, closer

    return query


def record_acceptable(proto: Any, host: Any) -> bool:
    """May a peer named in a DHT answer be used? Its signed peer record, if any, is
    stored when newer than ours; False only when it is forged or names another peer.

    py-libp2p's check (`maybe_consume_signed_record`) also refuses a record older than the
    one we hold, and its callers then drop the peer: a node whose addresses changed (a
    relay reservation came or went) vanished from the answers of every node that had
    cached its older record, for everyone who had talked to it since."""
    if maybe_consume_signed_record(proto, host):
        return True
    try:
        envelope, record = consume_envelope(proto.signedRecord, "libp2p-peer-record")
        if record.peer_id.to_bytes() != proto.id or ID.from_pubkey(envelope.public_key) != record.peer_id:
            return False
        held = host.get_peerstore().get_peer_record(record.peer_id)
        return held is not None and held.record().seq > record.seq
    except Exception:
        return False


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _addrs(raw: Any) -> list[Multiaddr]:
    out = []
    for item in raw:
        try:
            out.append(Multiaddr(item))
        except Exception:
            continue
    return out
