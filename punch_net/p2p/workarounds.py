"""Every py-libp2p 0.8.1 bug Punch works around, in one place.

Each function names the bug, the upstream tracker entry, and is covered by
tests/integration/test_workarounds.py, which shows the bug and the fix.
Upstream: https://github.com/libp2p/py-libp2p (issues referenced per function).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

KAD_READ_DEADLINE = 10.0  # seconds one inbound kad read may wait
KAD_STREAMS_PER_PEER = 4  # concurrent inbound kad streams one peer may hold


class DeadlineStream:
    """A stream whose every read fails after `deadline` seconds without data.

    py-libp2p's kad server reads with no timeout and handles at most 12 streams at
    once (kad_dht.py `_do_handle_stream`), so 12 silent streams starve every honest
    peer. With a deadline the read raises, the handler resets the stream and frees
    its slot. Upstream: libp2p/py-libp2p "Kad-DHT inbound stream handler has no read
    timeout" (see docs/ARCHITECTURE.md, Workarounds).
    """

    def __init__(self, stream: INetStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    async def read(self, n: int | None = None) -> bytes:
        with trio.fail_after(self._deadline):
            return await self._stream.read(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install_kad_read_deadline(
    host: IHost,
    handle_stream: Callable[[INetStream], Awaitable[None]],
    deadline: float = KAD_READ_DEADLINE,
    per_peer: int = KAD_STREAMS_PER_PEER,
) -> None:
    """Re-register the kad handler with a per-read deadline and a per-peer stream cap."""
    active: Counter[ID] = Counter()

    async def guarded(stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        if active[peer] >= per_peer:
            await _reset_quietly(stream)
            return
        active[peer] += 1
        try:
            await handle_stream(DeadlineStream(stream, deadline))  # type: ignore[arg-type]
        finally:
            active[peer] -= 1
            if active[peer] <= 0:
                del active[peer]

    host.set_stream_handler(KAD_PROTOCOL, guarded)


async def _reset_quietly(stream: INetStream) -> None:
    try:
        await stream.reset()
    except Exception:
        pass


def bound_security_handshake(host: IHost, timeout: float) -> None:
    """Give the outbound security handshake (multistream + Noise) a deadline.

    py-libp2p bounds the TCP dial and the muxer upgrade, but `upgrade_security` has no
    timeout, so `host.connect()` to a peer that accepts TCP and never speaks waits for
    ever (ConnectionConfig's dial/upgrade timeouts do not cover it; measured: still
    waiting after 30 s with every timeout set to 2 s). Dials the DHT makes on its own
    (refresh, queries) are not under Punch's `trio.fail_after`, so the host itself must
    give up. Upstream: libp2p/py-libp2p swarm.py `upgrade_outbound_raw_conn`.
    """
    from libp2p.transport.exceptions import SecurityUpgradeFailure

    upgrader: Any = host.get_network().upgrader  # type: ignore[attr-defined]
    original = upgrader.upgrade_security

    async def bounded(raw_conn: Any, is_initiator: bool, peer_id: ID | None = None) -> Any:
        with trio.move_on_after(timeout):
            return await original(raw_conn, is_initiator, peer_id)
        raise SecurityUpgradeFailure(f"security handshake timed out after {timeout:g}s")

    upgrader.upgrade_security = bounded


def no_happy_eyeballs_tail_delay() -> None:
    """Stop every dial from taking at least 250 ms.

    py-libp2p's `Swarm.dial_peer` staggers addresses ("happy eyeballs"): after starting
    each dial it waits `_HAPPY_EYEBALLS_DELAY` (0.25 s) for it to fail, and a dial that
    succeeds does not end that wait. So even a loopback connect to the only address
    takes 0.25 s, twice on a dialer's path to its first reply (bootstrap node, then
    the listener). Punch dials one TCP address per peer, so there is nothing to stagger:
    the delay is set to 0 (process-wide; idempotent). Upstream: libp2p/py-libp2p
    network/swarm.py `dial_peer`.
    """
    from libp2p.network import swarm

    swarm._HAPPY_EYEBALLS_DELAY = 0.0  # type: ignore[attr-defined]


AGENT_KEY = "AgentVersion"


def keep_agent_version(agent: str) -> None:
    """Say who we are in identify, and remember who the peer says it is.

    py-libp2p's identify handler parses the peer's agent version and then drops it
    (`identity/update.py` `update_peerstore_from_identify` stores only protocols, addrs,
    key and record), and announces itself as plain "py-libp2p/…". We wrap that function
    where basic_host imports it so the agent lands in the peerstore under "AgentVersion"
    (go-libp2p's key), and set our own agent string. Process-wide; idempotent.
    Upstream: libp2p/py-libp2p identity/update.py.
    """
    from libp2p.host import basic_host
    from libp2p.identity.identify import identify

    identify.AGENT_VERSION = agent  # type: ignore[attr-defined]
    original = basic_host.update_peerstore_from_identify
    if getattr(original, "_punch_keeps_agent", False):
        return

    async def update_and_keep_agent(peerstore: Any, peer_id: ID, msg: Any) -> None:
        await original(peerstore, peer_id, msg)
        if getattr(msg, "agent_version", ""):
            try:
                peerstore.put(peer_id, AGENT_KEY, str(msg.agent_version))
            except Exception:
                pass

    update_and_keep_agent._punch_keeps_agent = True  # type: ignore[attr-defined]
    basic_host.update_peerstore_from_identify = update_and_keep_agent  # type: ignore[assignment]


def dedupe_providers(providers: Iterable[PeerInfo]) -> list[PeerInfo]:
    """`find_providers` can return one provider twice; merge them by peer id, keeping addrs."""
    merged: dict[ID, PeerInfo] = {}
    for info in providers:
        if info.peer_id in merged:
            known = merged[info.peer_id].addrs
            known.extend(a for a in info.addrs if a not in known)
        else:
            merged[info.peer_id] = PeerInfo(info.peer_id, list(info.addrs))
    return list(merged.values())


async def learn_peer_id(host: IHost, addr: multiaddr.Multiaddr) -> ID:
    """Find who listens at `addr` with a Noise handshake that expects no particular peer.

    `host.connect()` needs a peer id, but users type bootstrap addresses without
    `/p2p/` (the seed's default is `/ip4/127.0.0.1/tcp/51820`). Noise XX tells us the
    responder's identity; we close that probe and dial normally. Callers put a deadline
    around this.
    """
    swarm: Any = host.get_network()
    transport = swarm.transport_manager.transport_for_dialing(addr)
    if transport is None:
        raise OSError(f"no transport can dial {addr}")
    raw = await transport.dial(addr)
    try:
        secure = await swarm.upgrader.security_multistream.secure_outbound(raw, None)
    except BaseException:
        await raw.close()
        raise
    try:
        return secure.get_remote_peer()
    finally:
        await secure.close()


def quiet_libp2p_logging(level: int = logging.CRITICAL) -> None:
    """py-libp2p logs expected peer failures (reset streams, EOFs) as warnings/errors
    on stderr; Punch reports what matters through its own events instead."""
    logging.getLogger("libp2p").setLevel(level)
    logging.getLogger("multiaddr").setLevel(level)


# ---------------------------------------------------------------------- DHT at scale
# Covered by tests/integration/test_workarounds_dht.py (bug shown, then the fix).

KAD_ALPHA = 3  # query concurrency the Kademlia spec and go/rust-libp2p use


def limit_kad_concurrency(alpha: int = KAD_ALPHA) -> None:
    """py-libp2p 0.8.1 sets ALPHA = 10 (kad_dht/common.py) and each module binds its own
    copy: a lookup keeps 10 queries in flight and dials 10 new peers per round, which on
    a 2-core box means 10 Noise handshakes at once and a connection count that grows
    with every lookup. The spec's α = 3. Process-wide (the modules are shared)."""
    from libp2p.kad_dht import kad_dht, peer_routing, provider_store

    for module in (kad_dht, peer_routing, provider_store):
        module.ALPHA = alpha  # type: ignore[attr-defined]


def _known_protocols(host: IHost, peer: ID) -> list[str]:
    try:
        return [str(p) for p in host.get_peerstore().get_protocols(peer) or []]
    except Exception:
        return []


def install_server_only_routing(host: IHost, dht: Any) -> None:
    """The kad server adds every peer that opens a kad stream to its routing table with
    `skip_server_mode_check=True` (kad_dht.py `_do_handle_stream`), client-mode peers
    included, and then hands them out to others as servers they cannot query. Only add a
    peer whose identify says it serves `/ipfs/kad/1.0.0`; servers whose identify has not
    arrived yet are added after identify by the node (Node._add_if_dht_server)."""
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


def install_dead_peer_eviction(host: IHost, dht: Any) -> None:
    """A failed FIND_NODE only evicts the peer when opening the stream raises, and a
    failed GET_PROVIDERS never does (peer_routing.py / provider_store.py), so dead peers
    stay in the table and keep being handed out. After a query that returned nothing,
    evict the peer if we are not connected to it (the dial failed or it went away)."""
    network = host.get_network()
    routing = dht.peer_routing
    store = dht.provider_store
    query_closest = routing._query_peer_for_closest
    query_providers = store._get_providers_from_peer_with_closers

    def evict_if_gone(peer: ID) -> None:
        if not network.get_connections(peer):
            dht.routing_table.remove_peer(peer)

    async def closest(peer: ID, key: bytes) -> list[ID]:
        result = await query_closest(peer, key)
        if not result:
            evict_if_gone(peer)
        return list(result)

    async def providers(peer: ID, key: bytes) -> tuple[list[PeerInfo], list[ID]]:
        found, closer = await query_providers(peer, key)
        if not found and not closer:
            evict_if_gone(peer)
        return found, closer

    routing._query_peer_for_closest = closest
    store._get_providers_from_peer_with_closers = providers


def disable_auto_connector(host: IHost) -> None:
    """The swarm's AutoConnector dials peerstore entries until it holds
    (low_watermark + high_watermark) / 2 connections (200 by default), and every DHT
    response fills the peerstore: this, not the DHT, turns a network into a full mesh.
    Punch's connection manager decides which connections to keep; no blind dialing."""
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is None:
        return

    async def no_dials() -> None:
        return None

    connector.maybe_connect = no_dials


# ---------------------------------------------------------------------- relay addresses
# Covered by tests/nat/test_relay_units.py (bug shown, then the fix).


def advertise_extra_addrs(host: IHost, extra: Callable[[], list[str]]) -> None:
    """Make `host.get_addrs()` (identify, provider records, FIND_NODE answers) include
    `extra()` — our `/p2p-circuit` addresses, each ending in `/p2p/<us>`.

    py-libp2p 0.8.1 `BasicHost.get_addrs()` strips an address's *first* `/p2p/` value and
    appends ours, so `/ip4/R/tcp/N/p2p/<relay>/p2p-circuit` from an addrs factory comes out
    as `/ip4/R/tcp/N/p2p/<us>`: a lie pointing at the relay. Circuit addresses have to be
    appended after that step; the kad provider store reads `host.get_addrs()` at call time.
    """
    original = host.get_addrs

    def get_addrs() -> list[multiaddr.Multiaddr]:
        addrs = list(original())
        seen = {str(a) for a in addrs}
        for text in extra():
            if text not in seen:
                try:
                    addrs.append(multiaddr.Multiaddr(text))
                except Exception:
                    continue
                seen.add(text)
        return addrs

    host.get_addrs = get_addrs  # type: ignore[method-assign]


def forget_dial_failure(host: IHost, peer: ID) -> None:
    """Let an explicit dial through py-libp2p's 60 s "recently failed all addresses" cache.

    The swarm refuses every dial to a peer for 60 s after one failed dial
    (`Swarm._negative_peer_cache`, checked first in `dial_peer`). A bootstrap node or
    relay that restarts is then unreachable for a minute although it is back: we
    evict the peer before dialing an address the user configured.
    """
    cache = getattr(host.get_network(), "_negative_peer_cache", None)
    if cache is not None:
        cache.evict(str(peer))
