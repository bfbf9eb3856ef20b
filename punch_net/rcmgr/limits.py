"""The limits the resource manager enforces (TOML `[limits]`, docs/OPERATIONS.md).

Modelled on go-libp2p's resource manager: a system scope (the whole node), a transient
scope (connections still in their handshake), per-IP, per-peer and per-protocol scopes.
Over a limit, the connection or stream is refused at once; requests over a peer's share
wait (backpressure: the stream is not read), over the node's share get `busy` at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    # connections (inbound; the connection gater at the listener's accept, before Noise)
    conns_inbound: int = 512  # system: inbound connections open, handshaking or not
    conns_inbound_per_ip: int = 128  # one source IP address (a testnet puts many on 127.0.0.1)
    handshakes: int = 64  # transient: inbound connections still in Noise/yamux negotiation
    handshakes_per_ip: int = 8
    handshake_timeout: float = 5.0  # seconds an inbound handshake may take
    # inbound streams of every protocol (per-protocol exceptions: PROTOCOL_LIMITS below)
    streams_inbound: int = 2048  # system
    streams_inbound_per_peer: int = 64  # all protocols of one peer
    streams_per_protocol: int = 512  # one protocol, all peers
    streams_per_protocol_per_peer: int = 4  # one protocol, one peer
    streams_per_protocol_per_ip: int = 64  # one protocol, all peers behind one IP address (a local testnet shares one)
    first_byte_timeout: float = 5.0  # seconds an inbound kad/command/torrent/AutoNAT stream may wait for its first byte
    # inbound streams still in multistream-select (go-libp2p's transient scope)
    # (negotiation takes milliseconds; the margin is for a loaded node with a testnet on one IP)
    streams_negotiating: int = 512  # system
    streams_negotiating_per_peer: int = 32
    streams_negotiating_per_ip: int = 128
    negotiation_timeout: float = 5.0  # seconds an inbound stream may take to name a protocol we serve
    # command requests (backpressure)
    requests_in_flight: int = 256  # system: requests being served
    requests_in_flight_per_peer: int = 32  # over this the peer's stream is not read until one ends
    request_memory: int = 64 * MIB  # system: bytes of requests + replies in flight
    request_memory_per_peer: int = 2 * MIB
    reply_stall_timeout: float = 10.0  # a peer that takes no reply bytes for this long is reset

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"limits: {f.name} must be a positive number (got {value!r})")


LIMIT_DOCS: dict[str, str] = {
    "conns_inbound": "Inbound connections open at once (handshaking or not), in total.",
    "conns_inbound_per_ip": "Inbound connections open at once from one IP address.",
    "handshakes": "Inbound connections still in their Noise/yamux handshake, in total.",
    "handshakes_per_ip": "Inbound handshakes in progress from one IP address.",
    "handshake_timeout": "Seconds an inbound handshake may take before the connection is closed.",
    "streams_inbound": "Inbound streams open at once (every protocol), in total.",
    "streams_inbound_per_peer": "Inbound streams open at once from one peer (every protocol).",
    "streams_per_protocol": "Inbound streams of one protocol at once, all peers (a protocol without its own limits).",
    "streams_per_protocol_per_peer": "Inbound streams of one protocol at once from one peer (ditto).",
    "streams_per_protocol_per_ip": "Inbound streams of one protocol at once from one IP, all its peers (ditto).",
    "first_byte_timeout": "Seconds an inbound kad, command, torrent or AutoNAT stream may wait for its first byte.",
    "streams_negotiating": "Inbound streams still choosing their protocol (multistream-select), in total.",
    "streams_negotiating_per_peer": "Inbound streams still choosing their protocol, from one peer.",
    "streams_negotiating_per_ip": "Inbound streams still choosing their protocol, from one IP address (all its peers).",
    "negotiation_timeout": "Seconds an inbound stream may take to choose its protocol before it is reset.",
    "requests_in_flight": "Command requests served at once, in total (over it: a `busy` reply at once).",
    "requests_in_flight_per_peer": "Command requests served at once for one peer (over it: its stream waits).",
    "request_memory": "Bytes of command requests and replies in flight, in total (over it: `busy`).",
    "request_memory_per_peer": "Bytes of command requests and replies in flight for one peer (over it: wait).",
    "reply_stall_timeout": "Seconds a peer may leave our replies unread before its stream is reset.",
}


@dataclass(frozen=True)
class ProtocolLimits:
    """Inbound stream limits of one protocol; None: the general `streams_per_protocol*`.
    `first_byte`: the stream's first read must come within `first_byte_timeout` (the
    client speaks first, at once); `every_read`: so must each later read."""

    streams: int | None = None  # all peers
    per_peer: int | None = None
    per_ip: int | None = None
    first_byte: bool = False
    every_read: bool = False


# Per-protocol exceptions to the general limits, after go-libp2p's SetDefaultServiceLimits
# (libp2p/limits.go) with its base figures; a protocol not named here (kad, the command
# protocol, any other a role registers) gets the general `streams_per_protocol*` limits.
# The per-IP share stays below the protocol's total, so one address cannot fill it.
KAD = "/ipfs/kad/1.0.0"
COMMAND = "/punch/cmd/1.0.0"
PROTOCOL_LIMITS: Mapping[str, ProtocolLimits] = {
    KAD: ProtocolLimits(first_byte=True),  # later reads: 10 s each (rcmgr_streams.install_kad)
    COMMAND: ProtocolLimits(first_byte=True),  # later reads: the command server's own stall timeout
    # identify: we speak and close at once, a silent peer costs nothing; testnet bursts on one IP
    "/ipfs/id/1.0.0": ProtocolLimits(256, 16, 128),
    "/ipfs/id/push/1.0.0": ProtocolLimits(256, 16, 128),  # py-libp2p reads it within 10 s
    "/ipfs/ping/1.0.0": ProtocolLimits(64, 2, 32),  # py-libp2p: 10 s without a ping ends it; 2 a peer
    "/libp2p/autonat/1.0.0": ProtocolLimits(64, 4, 32, first_byte=True, every_read=True),  # no read deadline
    "/libp2p/dcutr": ProtocolLimits(64, 4, 32),  # the DCUtR sessions time their own exchange
    # relay v2: a hop stream lasts its circuit's life (`relay_max_circuits_per_peer`); a stop
    # stream becomes a relayed connection (the relay's 15 s read deadline, then our handshake's)
    "/libp2p/circuit/relay/0.2.0/hop": ProtocolLimits(640, 32, 256),
    "/libp2p/circuit/relay/0.2.0/stop": ProtocolLimits(640, 64, 320),
    # torrent: one stream per torrent and peer, idle up to 120 s once it has spoken
    "/punch/torrent/1.0.0": ProtocolLimits(1024, 32, 512, first_byte=True),
}


def limits_from(values: dict[str, Any]) -> Limits:
    """Limits from `{name: value}` (NodeConfig's `limit_<name>` fields without the prefix)."""
    return Limits(**{k: v for k, v in values.items() if k in Limits.__dataclass_fields__})
