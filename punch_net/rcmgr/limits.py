"""The limits the resource manager enforces (TOML `[limits]`, docs/OPERATIONS.md).

Modelled on go-libp2p's resource manager: a system scope (the whole node), a transient
scope (connections still in their handshake), per-IP, per-peer and per-protocol scopes.
Over a limit, the connection or stream is refused at once; requests over a peer's share
wait (backpressure: the stream is not read), over the node's share get `busy` at once.
"""

from __future__ import annotations

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
    # inbound streams, for the protocols Punch serves (kad and the command protocol)
    streams_inbound: int = 2048  # system
    streams_inbound_per_peer: int = 32
    streams_per_protocol: int = 512  # one protocol, all peers
    streams_per_protocol_per_peer: int = 4  # one protocol, one peer
    streams_per_protocol_per_ip: int = 64  # one protocol, all peers behind one IP address (a local testnet shares one)
    first_byte_timeout: float = 5.0  # seconds an inbound kad/command stream may wait for its first byte
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
    "streams_inbound": "Inbound kad + command streams open at once, in total.",
    "streams_inbound_per_peer": "Inbound kad + command streams open at once from one peer.",
    "streams_per_protocol": "Inbound streams of one protocol (kad or command) at once, all peers.",
    "streams_per_protocol_per_peer": "Inbound streams of one protocol at once from one peer.",
    "streams_per_protocol_per_ip": "Inbound streams of one protocol at once from one IP address (all its peers).",
    "first_byte_timeout": "Seconds an inbound kad or command stream may wait for its first byte.",
    "requests_in_flight": "Command requests served at once, in total (over it: a `busy` reply at once).",
    "requests_in_flight_per_peer": "Command requests served at once for one peer (over it: its stream waits).",
    "request_memory": "Bytes of command requests and replies in flight, in total (over it: `busy`).",
    "request_memory_per_peer": "Bytes of command requests and replies in flight for one peer (over it: wait).",
    "reply_stall_timeout": "Seconds a peer may leave our replies unread before its stream is reset.",
}


def limits_from(values: dict[str, Any]) -> Limits:
    """Limits from `{name: value}` (NodeConfig's `limit_<name>` fields without the prefix)."""
    return Limits(**{k: v for k, v in values.items() if k in Limits.__dataclass_fields__})
