"""Every py-libp2p 0.8.1 monkeypatch and override Punch uses, one small module each.

Each module's docstring says the bug and links the upstream code (or issue); each has a
bug-then-fix test in tests/integration/test_patches.py or tests/unit/test_patches.py (the
GET_PROVIDERS query and the walk: tests/scale/test_provider_walk.py). If a test's "bug"
half starts failing, upstream fixed it and the patch can go.

Entry points (all idempotent):
- `install(agent)`: process-wide patches (dial delay, identify agent, one-flight protocol
  negotiation, Noise/yamux data path).
- `install_host(host, dial_timeout, addrs_generation)`: per-host patches (handshake deadline,
  connected peers' addresses kept, `get_addrs()` cached); `build_host` calls both.
- `install_dht(host, dht, server=...)`: per-DHT patches (kad α, no auto-dialing, server-only
  routing table, GET_PROVIDERS query and walk, dead-peer eviction, tracing, lookup memory;
  for a server also the inbound read deadline / per-peer cap).
- `install_limits(host, rcmgr)`: the connection gate of punch_net/rcmgr (`rcmgr_conn_gate`)
  and its inbound stream gate, every protocol and streams still negotiating one
  (`rcmgr_streams`); with `rcmgr`, `install_dht` serves kad through it.
Used directly where they are called: `circuit_addrs.advertise_extra_addrs` (a host with
relay addresses), `dial_failure_cache.forget_dial_failure` (before an explicit dial),
`yamux_window.grow_receive_window` and
`yamux_window_halves.release_in_halves` and `yamux_read_stream.hand_over_buffer` (bulk streams), and the subclasses
`relay_hop.PatchedCircuitV2` and `autonat_dial_back.DialBackService` (imported on their own:
not from here, so this package does not import punch_net.relay).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from libp2p.abc import IHost

from punch_net.p2p.patches import (
    addrs_cache,
    auto_connector,
    connected_peer_addrs,
    happy_eyeballs,
    identify_agent,
    kad_alpha,
    kad_dead_peer_eviction,
    kad_inbound_guard,
    kad_lookup_memory,
    kad_lookup_tracing,
    kad_provider_query,
    kad_provider_walk,
    kad_server_only_routing,
    multiselect_one_flight,
    noise_batching,
    rcmgr_conn_gate,
    rcmgr_streams,
    secure_session_read,
    security_handshake_timeout,
    yamux_batched_write,
    yamux_fast_data,
    yamux_read_stream,
    yamux_window_cap,
    yamux_window_halves,
)
from punch_net.p2p.patches.circuit_addrs import advertise_extra_addrs
from punch_net.p2p.patches.dial_failure_cache import forget_dial_failure
from punch_net.p2p.patches.yamux_window import grow_receive_window
from punch_net.rcmgr import ResourceManager

_installed = False


def install(agent: str | None = None) -> None:
    """Process-wide patches. `agent`: our identify agent version (default: Punch's)."""
    global _installed
    if agent is None:
        from punch_net import AGENT_VERSION

        agent = AGENT_VERSION
    identify_agent.install(agent)  # sets the agent string every time, wraps once
    if _installed:
        return
    happy_eyeballs.install()
    multiselect_one_flight.install()
    noise_batching.install()
    secure_session_read.install()
    yamux_fast_data.install()
    yamux_batched_write.install()
    yamux_window_cap.install()
    yamux_window_halves.install()
    yamux_read_stream.install()
    _installed = True


def install_host(host: IHost, dial_timeout: float, addrs_generation: Callable[[], int] | None = None) -> None:
    """Per-host patches: a deadline on the outbound security handshake; a connected peer's
    addresses do not expire (a DHT server then names a connected client in FIND_NODE);
    with the addrs factory's `addrs_generation`, `get_addrs()` is cached (addrs_cache)."""
    security_handshake_timeout.install(host, dial_timeout)
    connected_peer_addrs.install(host)
    if addrs_generation is not None:
        addrs_cache.install(host, addrs_generation)


def install_dht(host: IHost, dht: Any, *, server: bool, walk: Callable[[Any], Any],
                rcmgr: ResourceManager | None = None) -> None:
    """Per-DHT patches, on a freshly built host and DHT (before the host runs), in the
    order they wrap each other. `server`: the DHT runs in server mode (inbound guard:
    through `rcmgr`'s stream limits when given); `walk(dht)` builds the provider walk that
    replaces `find_providers` (dht/walk.py)."""
    if getattr(dht, "_punch_patched", False):
        return
    dht._punch_patched = True
    if server and rcmgr is not None:
        rcmgr_streams.install_kad(host, dht, rcmgr, per_read=kad_inbound_guard.KAD_READ_DEADLINE)
    elif server:
        kad_inbound_guard.install_kad_read_deadline(host, dht.handle_stream)
    kad_alpha.install()
    auto_connector.install(host)
    kad_server_only_routing.install_server_only_routing(host, dht)
    kad_provider_query.install(host, dht)
    kad_dead_peer_eviction.install_dead_peer_eviction(host, dht)
    kad_lookup_tracing.install_tracing(dht)
    kad_provider_walk.install(dht, walk)
    kad_lookup_memory.install_lookup_memory(dht)


def install_limits(host: IHost, rcmgr: ResourceManager) -> None:
    """Per-host: inbound connections and streams through the resource manager's gates
    (before listening)."""
    rcmgr_conn_gate.install(host, rcmgr)
    rcmgr_streams.install(host, rcmgr)


__all__ = [
    "advertise_extra_addrs",
    "forget_dial_failure",
    "grow_receive_window",
    "install",
    "install_dht",
    "install_host",
    "install_limits",
]
