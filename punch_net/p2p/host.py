"""Build the libp2p host Punch runs on: TCP + Noise + Yamux, identify, ping, with dial
deadlines so a silent peer fails in seconds, not the library's default ~120 s."""

from __future__ import annotations

import errno
import socket

from libp2p import new_host
from libp2p.abc import IHost, ISecureTransport
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from punch_net import AGENT_VERSION
from punch_net.p2p import patches
from punch_net.p2p.addresses import AdvertisedAddrs


class ListenError(Exception):
    """We cannot listen where asked (port in use, no such interface, no permission)."""


def check_port_free(host: str, port: int) -> None:
    """py-libp2p's `listen` only returns False on failure; find the real reason first."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None


def noise_only(key_pair: KeyPair) -> dict[TProtocol, ISecureTransport]:
    """Noise and nothing else. py-libp2p's default also offers TLS, SECIO and
    `/plaintext/2.0.0`, so a peer could open an unencrypted connection to us."""
    return {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)}


def build_host(key_pair: KeyPair, dial_timeout: float = 10.0, addrs: AdvertisedAddrs | None = None) -> IHost:
    """A host that speaks only Noise and advertises what `addrs` decides (by default the
    real interface addresses, never 0.0.0.0)."""
    connection_config = ConnectionConfig(
        dial_timeout=dial_timeout,
        inbound_upgrade_timeout=dial_timeout,
        outbound_upgrade_timeout=dial_timeout,
        max_connections=1000,
    )
    retry = RetryConfig(max_retries=0, initial_delay=0.1, max_delay=1.0)
    advertised = addrs if addrs is not None else AdvertisedAddrs()
    host = new_host(
        key_pair=key_pair,
        connection_config=connection_config,
        addrs_factory=advertised,
        negotiate_timeout=int(max(dial_timeout, 1)),
        sec_opt=noise_only(key_pair),
    )
    host.get_network().retry_config = retry  # type: ignore[attr-defined]
    patches.install_host(host, dial_timeout, lambda: advertised.generation)
    patches.install(AGENT_VERSION)
    return host
