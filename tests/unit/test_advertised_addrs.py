"""What a node advertises (AdvertisedAddrs, the addrs factory of host.get_addrs()):
--announce replaces, --no-announce filters, observed and mapped addresses come first."""

from __future__ import annotations

import multiaddr
import pytest

from punch_net.p2p.addresses import AddressError, AdvertisedAddrs, is_public_ip, parse_no_announce

M = multiaddr.Multiaddr
PEER = "12D3KooWQ5dRkFC2zEVL2RVTamp3xmEi1LPc5vg5KkK4MTeHUY14"


def strs(addrs: list[multiaddr.Multiaddr]) -> list[str]:
    return [str(a) for a in addrs]


def test_announce_replaces_listen_addresses() -> None:
    book = AdvertisedAddrs(announce=["/ip4/203.0.113.7/tcp/4001", f"/dns4/node.example/tcp/4001/p2p/{PEER}"])
    got = book([M("/ip4/10.0.0.5/tcp/4001")])
    assert strs(got) == ["/ip4/203.0.113.7/tcp/4001", "/dns4/node.example/tcp/4001"]


def test_no_announce_exact_and_network() -> None:
    book = AdvertisedAddrs(no_announce=["/ip4/10.0.0.0/ipcidr/8", "/ip4/192.168.1.2/tcp/4001"])
    got = book([M("/ip4/10.1.2.3/tcp/4001"), M("/ip4/192.168.1.2/tcp/4001"), M("/ip4/192.168.1.2/tcp/4002"),
                M("/ip4/198.51.100.1/tcp/4001")])
    assert strs(got) == ["/ip4/192.168.1.2/tcp/4002", "/ip4/198.51.100.1/tcp/4001"]
    # it filters announced addresses too
    both = AdvertisedAddrs(announce=["/ip4/10.0.0.1/tcp/1", "/ip4/203.0.113.7/tcp/1"],
                           no_announce=["/ip4/10.0.0.0/ipcidr/8"])
    assert strs(both([])) == ["/ip4/203.0.113.7/tcp/1"]


def test_mapped_and_observed_first_and_change_listener() -> None:
    book = AdvertisedAddrs()
    seen: list[list[str]] = []
    book.on_change(seen.append)
    book.set_observed([M("/ip4/198.51.100.9/tcp/4001")])
    assert seen == []  # nothing advertised yet: no listen address
    listen = [M("/ip4/10.0.0.5/tcp/4001")]
    assert strs(book(listen)) == ["/ip4/198.51.100.9/tcp/4001", "/ip4/10.0.0.5/tcp/4001"]
    book.set_mapped([M("/ip4/198.51.100.1/tcp/4001")])
    assert seen == [["/ip4/198.51.100.1/tcp/4001", "/ip4/198.51.100.9/tcp/4001", "/ip4/10.0.0.5/tcp/4001"]]
    book.set_mapped([M("/ip4/198.51.100.1/tcp/4001")])  # same again: no event
    assert len(seen) == 1
    book.set_mapped([])
    assert seen[-1] == ["/ip4/198.51.100.9/tcp/4001", "/ip4/10.0.0.5/tcp/4001"]


def test_announce_wins_over_observed() -> None:
    book = AdvertisedAddrs(announce=["/ip4/203.0.113.7/tcp/4001"])
    book.set_observed([M("/ip4/198.51.100.9/tcp/4001")])
    assert strs(book([M("/ip4/10.0.0.5/tcp/4001")])) == ["/ip4/203.0.113.7/tcp/4001"]


@pytest.mark.parametrize("text", ["/ip4/1.2.3.4/udp/1", "nonsense", "/ip4/1.2.3.4/tcp/1/p2p-circuit"])
def test_bad_announce_is_one_line(text: str) -> None:
    with pytest.raises(AddressError):
        AdvertisedAddrs(announce=[text])


def test_bad_no_announce() -> None:
    with pytest.raises(AddressError):
        parse_no_announce("/ip4/10.0.0.0/ipcidr/99")


def test_public_ip() -> None:
    assert is_public_ip(M("/ip4/8.8.8.8/tcp/1")) and is_public_ip(M("/ip4/198.18.0.20/tcp/1"))
    assert not is_public_ip(M("/ip4/10.0.0.1/tcp/1")) and not is_public_ip(M("/dns4/x/tcp/1"))


def test_flags_and_config_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from punch_net.cli.main import build_parser, config_from_args
    from punch_net.config import ConfigError

    conf = tmp_path / "c.toml"
    conf.write_text('[node]\nannounce = ["/ip4/203.0.113.7/tcp/4001"]\nno_announce = ["/ip4/10.0.0.0/ipcidr/8"]\n'
                    "mdns = false\n")
    args = build_parser().parse_args(["listener", "--config", str(conf)])
    cfg = config_from_args(args, "listener")
    assert cfg.announce == ["/ip4/203.0.113.7/tcp/4001"] and cfg.no_announce == ["/ip4/10.0.0.0/ipcidr/8"]
    assert cfg.mdns is False and cfg.port_mapping is True
    args = build_parser().parse_args(["listener", "--config", str(conf), "--announce", "/ip4/198.51.100.1/tcp/1",
                                      "--announce", "/dns4/a.example/tcp/2", "--no-port-mapping"])
    cfg = config_from_args(args, "listener")  # flags replace the file's list
    assert cfg.announce == ["/ip4/198.51.100.1/tcp/1", "/dns4/a.example/tcp/2"] and cfg.port_mapping is False
    conf.write_text('[node]\nannounce = ["/ip4/1.2.3.4/udp/1"]\n')
    with pytest.raises(AddressError):
        config_from_args(build_parser().parse_args(["listener", "--config", str(conf)]), "listener")
    conf.write_text('[node]\nannounce = "/ip4/1.2.3.4/tcp/1"\n')
    with pytest.raises(ConfigError):
        config_from_args(build_parser().parse_args(["listener", "--config", str(conf)]), "listener")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["listener", "--announce", "1.2.3.4:5"])


def test_new_events_are_worded_and_json() -> None:
    from punch_net import events as ev
    from punch_net.cli.render import human

    changed = ev.AddrsChanged(addrs=[f"/ip4/198.51.100.1/tcp/4001/p2p/{PEER}"])
    assert "198.51.100.1" in (human(changed) or "") and changed.to_json()["event"] == "addrs_changed"
    mdns = ev.MdnsPeer(peer_id=PEER, addrs=[f"/ip4/192.168.1.5/tcp/4001/p2p/{PEER}"])
    assert "mDNS" in (human(mdns) or "") and mdns.to_json()["event"] == "mdns_peer"
    mapped = ev.PortMapped(external="/ip4/11.22.33.1/tcp/4001", internal="/ip4/10.0.4.2/tcp/4001",
                           gateway="http://10.0.4.1:5000/ctl", lease=3600)
    assert "11.22.33.1" in (human(mapped) or "") and mapped.to_json()["lease"] == 3600
    gone = ev.PortMapped(external="", internal="/ip4/10.0.4.2/tcp/4001", gateway="gw", lease=0, removed=True)
    assert "removed" in (human(gone) or "")
