"""Observed addresses (punch_net/reach/observed.py): two observer networks must agree."""

from __future__ import annotations

from punch_net.reach.observed import ObservedAddrs, observer_group

PUB = "/ip4/198.18.0.13/tcp/4001"


def test_two_networks_confirm_one_network_does_not() -> None:
    obs = ObservedAddrs()
    assert obs.observe("c1", "198.18.1.20", PUB, on_listen_port=True, public=True)
    assert obs.confirmed(0) == []
    obs.observe("c2", "198.18.1.77", PUB, on_listen_port=True, public=True)  # same /24: one vote
    assert obs.confirmed(0) == []
    obs.observe("c3", "198.18.2.20", PUB, on_listen_port=True, public=True)
    assert obs.confirmed(0) == [PUB]


def test_outbound_and_private_observations_do_not_count() -> None:
    obs = ObservedAddrs()
    assert not obs.observe("c1", "198.18.1.20", "/ip4/198.18.0.13/tcp/53211", on_listen_port=False, public=True)
    assert not obs.observe("c2", "10.0.3.9", "/ip4/10.0.3.2/tcp/4001", on_listen_port=True, public=False)
    obs.observe("c3", "198.18.2.20", "/ip4/198.18.0.13/tcp/53999", on_listen_port=False, public=True)
    assert obs.confirmed(0) == []


def test_votes_linger_after_close_then_expire() -> None:
    obs = ObservedAddrs(linger=60)
    obs.observe("c1", "198.18.1.20", PUB, on_listen_port=True, public=True)
    obs.observe("c2", "198.18.2.20", PUB, on_listen_port=True, public=True)
    obs.closed("c1", now=100)
    assert obs.confirmed(150) == [PUB]
    assert obs.confirmed(161) == []
    obs.observe("c4", "198.18.3.20", PUB, on_listen_port=True, public=True)
    assert obs.confirmed(162) == [PUB]


def test_a_changed_observation_moves_the_vote_and_order_by_votes() -> None:
    obs = ObservedAddrs()
    other = "/ip4/203.0.113.5/tcp/4001"
    for i, conn in enumerate(("a", "b", "c")):
        obs.observe(conn, f"198.18.{i + 1}.20", PUB, on_listen_port=True, public=True)
    obs.observe("d", "198.18.9.20", other, on_listen_port=True, public=True)
    obs.observe("e", "198.18.8.20", other, on_listen_port=True, public=True)
    assert obs.confirmed(0) == [PUB, other]
    obs.observe("a", "198.18.1.20", other, on_listen_port=True, public=True)  # same conn, new view
    assert obs.confirmed(0) == [other, PUB]


def test_groups() -> None:
    assert observer_group("198.18.1.20") == "198.18.1.0/24"
    assert observer_group("2001:db8:1:2::1") == "2001:db8:1::/56"


def test_port_mapping_renewal_plan() -> None:
    from punch_net.reach.portmap import PERMANENT_RECHECK, Mapping, renew_after

    assert renew_after(3600) == 1800 and renew_after(0) == PERMANENT_RECHECK
    m = Mapping("gw", "11.22.33.1", 4001, "10.0.4.2", 4001, 3600, 0.0)
    assert m.external == "/ip4/11.22.33.1/tcp/4001" and m.internal == "/ip4/10.0.4.2/tcp/4001"


def test_autonat_public_lets_one_network_confirm() -> None:
    obs = ObservedAddrs()
    obs.observe("c1", "198.18.0.10", PUB, on_listen_port=True, public=True)
    assert obs.confirmed(0) == [] and obs.confirmed(0, autonat_public=True) == [PUB]


def test_natpmp_messages() -> None:
    import struct

    from punch_net.reach.portmap import (
        natpmp_external_request,
        natpmp_map_request,
        natpmp_parse_external,
        natpmp_parse_map,
    )

    assert natpmp_external_request() == b"\x00\x00"
    assert natpmp_map_request(4001, 4001, 3600) == bytes([0, 2, 0, 0, 0x0F, 0xA1, 0x0F, 0xA1, 0, 0, 0x0E, 0x10])
    assert natpmp_parse_external(bytes([0, 128, 0, 0, 0, 0, 0, 9, 11, 22, 33, 1])) == "11.22.33.1"
    assert natpmp_parse_external(bytes([0, 128, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0])) is None  # result 3: network failure
    answer = struct.pack("!BBHIHHI", 0, 130, 0, 9, 4001, 4001, 3600)
    assert natpmp_parse_map(answer) == (4001, 4001, 3600)
    assert natpmp_parse_map(struct.pack("!BBHIHHI", 0, 130, 2, 9, 4001, 0, 0)) is None  # refused
    assert natpmp_parse_map(answer[:10]) is None
