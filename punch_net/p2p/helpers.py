"""Plain helpers around py-libp2p that change none of its behaviour (the patches that do
live in punch_net/p2p/patches/)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo


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


def quiet_libp2p_logging() -> None:
    """py-libp2p's warnings and errors about expected peer failures become debug records
    (punch_net/p2p/logs.py); Punch reports what matters through its own events."""
    from punch_net.p2p.logs import tame_libp2p_logging

    tame_libp2p_logging()


def connection_bytes(conn: Any) -> tuple[int, int]:
    """(received, sent) bytes on a connection's wire since its Noise handshake, as counted
    by the patched transport (patches/noise_batching.py); (0, 0) for a connection without one."""
    transport = conn
    for attr in ("muxed_conn", "secured_conn", "conn"):
        transport = getattr(transport, attr, None)
        if transport is None:
            return 0, 0
    counts = getattr(transport, "__dict__", {})
    return int(counts.get("_punch_in", 0)), int(counts.get("_punch_out", 0))


DIAL_STAGGER = 0.25  # go-libp2p's dial ranker waits 250 ms before the next address


def direct_tcp_addrs(addrs: Iterable[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """The plain TCP addresses among `addrs`, in order, without /p2p/ and duplicates."""
    out: list[multiaddr.Multiaddr] = []
    for addr in addrs:
        text = str(addr)
        if "/p2p-circuit" in text or "/tcp/" not in text:
            continue
        cut = text.find("/p2p/")
        bare = multiaddr.Multiaddr(text[:cut]) if cut > 0 else addr
        if bare not in out:
            out.append(bare)
    return out


async def dial_in_order(host: IHost, peer: ID, addrs: list[multiaddr.Multiaddr],
                        stagger: float = DIAL_STAGGER) -> None:
    """Dial `addrs` in the order the peer advertised them, the next one `stagger` seconds
    later or as soon as the previous failed, keeping the first connection made.

    Why: `Swarm.dial_peer` dials one TCP address per peer, the oldest in the peerstore
    (swarm.py "at most 1 per transport class"), so a node known first by its private
    address is never dialed at the public one its provider record now names. Raises
    the last error when every address failed."""
    network = host.get_network()
    errors: list[BaseException] = []
    done = False
    async with trio.open_nursery() as nursery:
        for addr in addrs:
            failed = trio.Event()

            async def one(addr: multiaddr.Multiaddr = addr, failed: trio.Event = failed) -> None:
                nonlocal done
                try:
                    await network.dial_addr(addr, peer)
                except Exception as exc:
                    errors.append(exc)
                    failed.set()
                    return
                done = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(one)
            with trio.move_on_after(stagger):
                await failed.wait()
    if not done:
        raise errors[-1] if errors else ConnectionError(f"no address to dial for {peer}")


async def push_identify(host: IHost) -> None:
    """Tell every connected peer that speaks identify/push our addresses changed (they
    replace what they hold for us; the bootstrap nodes then hand out the new ones)."""
    from libp2p.identity.identify_push.identify_push import ID_PUSH, push_identify_to_peer

    store = host.get_peerstore()
    for peer in list(host.get_connected_peers()):
        try:
            protocols = [str(p) for p in store.get_protocols(peer)]
        except Exception:
            continue
        if str(ID_PUSH) in protocols:
            with trio.move_on_after(5):
                await push_identify_to_peer(host, peer)
