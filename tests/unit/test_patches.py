"""py-libp2p 0.8.1 patches (punch_net/p2p/patches/) whose bug shows without a network:
first the bug on plain py-libp2p, then the fix. Network ones: tests/integration/test_patches.py."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.kad_dht import kad_dht as kad_module
from libp2p.kad_dht import peer_routing as routing_module
from libp2p.kad_dht import provider_store as provider_module
from libp2p.kad_dht.peer_routing import PeerRouting
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from punch_net.p2p.helpers import dedupe_providers
from punch_net.p2p.identity import new_identity
from punch_net.p2p.patches import install, secure_session_read
from punch_net.p2p.patches.circuit_addrs import advertise_extra_addrs
from punch_net.p2p.patches.kad_alpha import install as limit_kad_concurrency

PEER_R = "12D3KooWFqq1LUdZdocxpG6DBkoyZanRCNAGxf5k2eqPCsmxy44z"


def test_install_is_idempotent() -> None:
    from libp2p.security.secure_session import SecureSession
    from libp2p.stream_muxer.yamux.yamux import YamuxStream

    install()
    read, write = SecureSession.read, YamuxStream.write
    install()
    assert SecureSession.read is read and YamuxStream.write is write


class _Msgs:
    """A Noise connection stand-in that hands out fixed messages."""

    def __init__(self, msgs: list[bytes]) -> None:
        self.msgs = list(msgs)

    async def read_msg(self) -> bytes:
        return self.msgs.pop(0) if self.msgs else b""


async def test_bug_and_fix_secure_session_copies_every_message() -> None:
    from libp2p.security.secure_session import SecureSession

    msg = bytes(range(256)) * 256

    def session() -> SecureSession:
        s = SecureSession.__new__(SecureSession)
        s.conn = _Msgs([msg, msg])  # type: ignore[assignment]
        s._reset_internal_buffer()
        return s

    plain = session()
    first = await secure_session_read.ORIGINAL_READ(plain, len(msg))
    assert first == msg and first is not msg, "bug: a whole-message read comes back as a copy"
    assert await secure_session_read.ORIGINAL_READ(plain, 10) == msg[:10]
    secure_session_read.install()
    ours = session()
    first = await SecureSession.read(ours, len(msg))
    assert first is msg  # fix: no copy
    assert await SecureSession.read(ours, 10) == msg[:10]
    assert await SecureSession.read(ours, None) == msg[10:]


def test_dedupe_providers_merges_addrs() -> None:
    a = ID.from_pubkey(new_identity().public_key)
    b = ID.from_pubkey(new_identity().public_key)
    m1, m2 = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1"), multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/2")
    out = dedupe_providers([PeerInfo(a, [m1]), PeerInfo(b, [m2]), PeerInfo(a, [m1, m2])])
    assert [p.peer_id for p in out] == [a, b]
    assert out[0].addrs == [m1, m2]




# ---------------------------------------------------------------------- α = 3


class _StubTable:
    def __init__(self, peers: list[ID]) -> None:
        self.peers = peers

    def find_local_closest_peers(self, key: bytes, count: int = 20) -> list[ID]:
        return self.peers[:count]

    def remove_peer(self, peer: ID) -> bool:
        return True


class _StubHost:
    def __init__(self) -> None:
        self.me = ID(b"\x00\x05hello")

    def get_id(self) -> ID:
        return self.me


async def max_in_flight_of_one_lookup() -> int:
    """Run py-libp2p's iterative lookup over 20 candidates whose queries each take a
    moment, and report the most queries it kept in flight at once."""
    peers = [ID(bytes([0, 4, i, i, i, i])) for i in range(20)]
    routing = PeerRouting(_StubHost(), _StubTable(peers))  # type: ignore[arg-type]
    in_flight = 0
    peak = 0

    async def query(peer: ID, key: bytes) -> list[ID]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(0.01)
        in_flight -= 1
        return []

    routing._query_peer_for_closest = query  # type: ignore[method-assign, assignment]
    with trio.fail_after(10):
        await routing.find_closest_peers_network(b"target")
    return peak


async def test_lookup_concurrency_is_alpha_3(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (kad_module, routing_module, provider_module):
        monkeypatch.setattr(module, "ALPHA", 10)  # the library's value, restored after the test
    assert await max_in_flight_of_one_lookup() == 10  # bug: 10 queries (and dials) at once
    limit_kad_concurrency()
    assert routing_module.ALPHA == provider_module.ALPHA == kad_module.ALPHA == 3
    assert await max_in_flight_of_one_lookup() == 3  # fix: α = 3 as the spec says




def test_bug_and_fix_get_addrs_mangles_circuit_addresses() -> None:
    circuit_base = f"/ip4/198.18.0.10/tcp/4001/p2p/{PEER_R}/p2p-circuit"
    host = new_host(key_pair=new_identity(), addrs_factory=lambda c: [multiaddr.Multiaddr(circuit_base)])
    me = host.get_id()
    # bug: the first /p2p/ value (the relay's) is stripped with everything after it
    assert [str(a) for a in host.get_addrs()] == [f"/ip4/198.18.0.10/tcp/4001/p2p/{me}"]
    host2 = new_host(key_pair=new_identity())
    me2 = host2.get_id()
    advertise_extra_addrs(host2, lambda: [f"{circuit_base}/p2p/{me2}"])
    assert f"{circuit_base}/p2p/{me2}" in [str(a) for a in host2.get_addrs()]




class _FakeMuxed:
    def __init__(self, ip: str) -> None:
        self.ip = ip

    def get_remote_address(self) -> tuple[str, int]:
        return (self.ip, 50000)


class _FakeConn:
    """An inbound connection as ObservedAddrManager sees it (no socket)."""

    is_closed = False

    def __init__(self, ip: str) -> None:
        from libp2p.rcmgr import Direction

        self.muxed_conn = _FakeMuxed(ip)
        self.direction = Direction.INBOUND


def test_bug_two_networks_agreeing_is_not_enough_fix_observed_addrs_hook() -> None:
    """A cloud VM (10.0.3.2 behind 198.18.0.13) seen at its public address from two networks."""
    from types import SimpleNamespace

    from punch_net.p2p.addresses import AdvertisedAddrs
    from punch_net.p2p.host import build_host
    from punch_net.reach.service import ObservedAddrsService

    local = [multiaddr.Multiaddr("/ip4/10.0.3.2/tcp/4001")]
    public = multiaddr.Multiaddr("/ip4/198.18.0.13/tcp/4001")
    # bug: plain py-libp2p wants 4 observers before it advertises
    plain = new_host(key_pair=new_identity())
    for ip in ("198.18.1.20", "198.18.2.20"):
        plain._observed_addr_manager.record_observation(_FakeConn(ip), public, local)  # type: ignore[attr-defined]
    assert not any(str(a).startswith(str(public)) for a in plain.get_addrs())
    # fix: the hook hands observations to Punch's rule, which AdvertisedAddrs advertises
    book = AdvertisedAddrs()
    host = build_host(new_identity(), addrs=book)
    book.bind_transport(lambda: local)
    service = ObservedAddrsService(SimpleNamespace(addresses=book), lambda: "unknown")  # type: ignore[arg-type]
    service.attach(host, None)
    host._observed_addr_manager.record_observation(_FakeConn("198.18.1.20"), public, local)  # type: ignore[attr-defined]
    assert not any(str(a).startswith(str(public)) for a in host.get_addrs())
    host._observed_addr_manager.record_observation(_FakeConn("198.18.2.20"), public, local)  # type: ignore[attr-defined]
    assert str(host.get_addrs()[0]).startswith(str(public) + "/p2p/")
    # AutoNAT saying "private" withholds it
    service.reachability = lambda: "private"
    service.update()
    assert not any(str(a).startswith(str(public)) for a in host.get_addrs())
