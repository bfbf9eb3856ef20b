"""punch_net/rcmgr: limit accounting without sockets, and the [limits] config section."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from punch_net.config import ConfigError, NodeConfig, apply_config, default_config_text, read_config_file
from punch_net.rcmgr import Limits, Refusal, Reservation, ResourceManager
from punch_net.rcmgr.metrics import RcmgrCollector


def taken(outcome: Reservation | Refusal) -> Reservation:
    assert isinstance(outcome, Reservation), outcome
    return outcome


def test_connections_are_limited_per_ip_and_in_total() -> None:
    rm = ResourceManager(Limits(conns_inbound=3, conns_inbound_per_ip=2))
    a1, a2 = taken(rm.reserve_connection("10.0.0.1")), taken(rm.reserve_connection("10.0.0.1"))
    assert rm.reserve_connection("10.0.0.1") == Refusal("ip", "connections")
    b1 = taken(rm.reserve_connection("10.0.0.2"))  # another address still gets in
    assert rm.reserve_connection("10.0.0.3") == Refusal("system", "connections")
    assert rm.blocked[("inbound", "ip", "connections")] == 1
    assert rm.blocked[("inbound", "system", "connections")] == 1
    a1.release()
    a1.release()  # idempotent: every exit path may release
    assert rm.used("system", "", "connections") == 2
    taken(rm.reserve_connection("10.0.0.3"))
    for r in (a2, b1):
        r.release()
    assert rm.used("ip", "10.0.0.1", "connections") == 0


def test_a_refusal_takes_nothing() -> None:
    rm = ResourceManager(Limits(streams_per_protocol_per_peer=1))
    taken(rm.reserve_stream("/kad", "peerA", "1.2.3.4"))
    before = rm.usage()
    assert rm.reserve_stream("/kad", "peerA", "1.2.3.4") == Refusal("protocol-peer", "streams")
    assert rm.usage() == before


def test_handshakes_use_the_transient_scope() -> None:
    rm = ResourceManager(Limits(handshakes=2, handshakes_per_ip=1))
    h = taken(rm.reserve_handshake("1.1.1.1"))
    assert rm.reserve_handshake("1.1.1.1") == Refusal("ip", "handshakes")
    taken(rm.reserve_handshake("2.2.2.2"))
    assert rm.reserve_handshake("3.3.3.3") == Refusal("transient", "handshakes")
    h.release()
    taken(rm.reserve_handshake("3.3.3.3"))


def test_many_identities_behind_one_ip_share_its_protocol_limit() -> None:
    """Identities are free, addresses are not: 10 peers × 4 streams from one IP get 16."""
    rm = ResourceManager(Limits(streams_per_protocol=24, streams_per_protocol_per_peer=4,
                                streams_per_protocol_per_ip=16))
    granted = sum(isinstance(rm.reserve_stream("/ipfs/kad/1.0.0", f"attacker{i}", "127.0.0.2"), Reservation)
                  for i in range(10) for _ in range(4))
    assert granted == 16
    assert isinstance(rm.reserve_stream("/ipfs/kad/1.0.0", "honest", "127.0.0.1"), Reservation)
    # other protocols are counted apart
    assert isinstance(rm.reserve_stream("/punch/cmd/1.0.0", "attacker0", "127.0.0.2"), Reservation)


def test_streams_per_peer_span_protocols() -> None:
    rm = ResourceManager(Limits(streams_inbound_per_peer=2))
    taken(rm.reserve_stream("/a", "p", ""))
    taken(rm.reserve_stream("/b", "p", ""))
    assert rm.reserve_stream("/c", "p", "") == Refusal("peer", "streams")


def test_requests_peer_share_then_node_share() -> None:
    rm = ResourceManager(Limits(requests_in_flight_per_peer=2, requests_in_flight=3,
                                request_memory_per_peer=1000, request_memory=1500))
    r1 = taken(rm.reserve_request("a", 400))
    taken(rm.reserve_request("a", 400))
    assert rm.reserve_request("a", 10) == Refusal("peer", "requests")  # the peer waits
    assert rm.reserve_request("b", 800) == Refusal("system", "memory")  # the node says busy
    taken(rm.reserve_request("b", 600))
    assert rm.reserve_request("c", 1) == Refusal("system", "requests")
    assert rm.used("peer", "a", "requests") == 2 and rm.used("peer", "a", "memory") == 800
    assert rm.used("system", "", "memory") == 1400 and rm.used("system", "", "requests") == 3
    r1.release()
    r1.release()  # idempotent
    assert rm.used("peer", "a", "requests") == 1 and rm.used("system", "", "memory") == 1000
    assert rm.memory_released == 400
    c = taken(rm.reserve_request("c", 1))
    assert rm.blocked[("inbound", "peer", "requests")] == 1
    assert rm.blocked[("inbound", "system", "memory")] == 1
    c.release()
    assert ("peer", "c", "requests") not in rm.usage()  # a peer with nothing in flight is forgotten


def test_one_request_bigger_than_a_peer_share_may_go_alone() -> None:
    rm = ResourceManager(Limits(request_memory_per_peer=1000, request_memory=10_000))
    big = taken(rm.reserve_request("a", 3000))
    assert rm.reserve_request("a", 3000) == Refusal("peer", "memory")
    big.release()
    taken(rm.reserve_request("a", 3000))


def test_release_wakes_listeners_and_forgets_empty_scopes() -> None:
    rm = ResourceManager()
    woken: list[int] = []
    rm.on_release(lambda: woken.append(1))
    r = taken(rm.reserve_stream("/p", "peer", "1.2.3.4"))
    r.release()
    assert woken == [1]
    assert rm.usage() == {}  # no per-peer/IP keys left behind after they leave


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="handshakes"):
        Limits(handshakes=0)


def test_limits_section_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[limits]\nhandshakes_per_ip = 3\nfirst_byte_timeout = 2.5\n")
    cfg = apply_config(NodeConfig(), read_config_file(path))
    assert cfg.limits.handshakes_per_ip == 3 and cfg.limits.first_byte_timeout == 2.5
    assert cfg.limits.conns_inbound == Limits().conns_inbound
    path.write_text("[limits]\nhandshakes = \"many\"\n")
    with pytest.raises(ConfigError, match="handshakes"):
        apply_config(NodeConfig(), read_config_file(path))
    path.write_text("[limits]\nhandshakes = 0\n")
    with pytest.raises(ConfigError, match="positive"):
        apply_config(NodeConfig(), read_config_file(path))
    path.write_text("[limits]\nno_such_limit = 1\n")
    with pytest.raises(ConfigError, match="no_such_limit"):
        read_config_file(path)


def test_default_config_lists_every_limit() -> None:
    data = tomllib.loads(default_config_text())
    assert data["limits"] == {k: getattr(Limits(), k) for k in Limits.__dataclass_fields__}


def test_metrics_use_go_libp2p_names() -> None:
    rm = ResourceManager(Limits(conns_inbound_per_ip=1))
    taken(rm.reserve_connection("1.1.1.1"))
    rm.reserve_connection("1.1.1.1")
    taken(rm.reserve_stream("/ipfs/kad/1.0.0", "p", "1.1.1.1"))
    families = {f.name: f for f in RcmgrCollector(rm).collect()}
    assert {"libp2p_rcmgr_connections", "libp2p_rcmgr_streams", "libp2p_rcmgr_memory",
            "libp2p_rcmgr_blocked_resources", "libp2p_rcmgr_fds", "punch_rcmgr_limit"} <= set(families)
    conns = {tuple(sorted(s.labels.items())): s.value for s in families["libp2p_rcmgr_connections"].samples}
    assert conns[(("dir", "inbound"), ("scope", "system"))] == 1
    blocked = [s for s in families["libp2p_rcmgr_blocked_resources"].samples
               if s.labels == {"dir": "inbound", "scope": "ip", "resource": "connection"}]
    assert blocked and blocked[0].value == 1
    streams = {(s.labels["scope"], s.labels["protocol"]): s.value for s in families["libp2p_rcmgr_streams"].samples}
    assert streams[("protocol", "/ipfs/kad/1.0.0")] == 1 and streams[("system", "")] == 1


def test_streams_still_negotiating_use_the_transient_scope() -> None:
    rm = ResourceManager(Limits(streams_negotiating=5, streams_negotiating_per_peer=2, streams_negotiating_per_ip=3))
    n1 = taken(rm.reserve_negotiation("a", "10.0.0.1"))
    taken(rm.reserve_negotiation("a", "10.0.0.1"))
    assert rm.reserve_negotiation("a", "10.0.0.1") == Refusal("transient-peer", "streams")
    taken(rm.reserve_negotiation("b", "10.0.0.1"))
    assert rm.reserve_negotiation("c", "10.0.0.1") == Refusal("transient-ip", "streams")  # identities are free
    taken(rm.reserve_negotiation("d", "10.0.0.2"))
    taken(rm.reserve_negotiation("e", "10.0.0.3"))
    assert rm.reserve_negotiation("f", "10.0.0.4") == Refusal("transient", "streams")
    assert rm.used("system", "", "streams") == 0  # a protocol's streams are counted apart
    n1.release()
    taken(rm.reserve_negotiation("f", "10.0.0.4"))
    families = {f.name: f for f in RcmgrCollector(rm).collect()}
    streams = {(s.labels["scope"], s.labels["protocol"]): s.value for s in families["libp2p_rcmgr_streams"].samples}
    assert streams[("transient", "")] == 5


def test_protocols_have_their_own_limits_else_the_general_ones() -> None:
    from punch_net.rcmgr.limits import ProtocolLimits

    rm = ResourceManager(Limits(streams_per_protocol_per_peer=4),
                         protocols={"/ping": ProtocolLimits(10, 2, 5), "/torrent": ProtocolLimits(per_peer=8)})
    granted = sum(isinstance(rm.reserve_stream("/ping", "a", "1.1.1.1"), Reservation) for _ in range(5))
    assert granted == 2 and rm.blocked[("inbound", "protocol-peer", "streams")] == 3
    assert sum(isinstance(rm.reserve_stream("/torrent", "a", "1.1.1.1"), Reservation) for _ in range(10)) == 8
    assert sum(isinstance(rm.reserve_stream("/other", "a", "1.1.1.1"), Reservation) for _ in range(10)) == 4
    assert rm.protocol_limits("/torrent") == ProtocolLimits(Limits().streams_per_protocol, 8,
                                                            Limits().streams_per_protocol_per_ip)


def test_default_protocol_limits_leave_room_beyond_one_address() -> None:
    """Every built-in per-protocol share of one IP is below the protocol's total, and the
    kad and command protocols keep the general (configurable) limits."""
    from punch_net.rcmgr.limits import COMMAND, KAD, PROTOCOL_LIMITS

    rm = ResourceManager()
    for protocol in PROTOCOL_LIMITS:
        spec = rm.protocol_limits(protocol)
        assert spec.per_peer is not None and spec.per_ip is not None and spec.streams is not None
        assert spec.per_peer <= spec.per_ip < spec.streams, protocol
    for protocol in (KAD, COMMAND):
        assert rm.protocol_limits(protocol).streams == Limits().streams_per_protocol
        assert rm.protocol_limits(protocol).first_byte
