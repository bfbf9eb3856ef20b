"""Internet-ready nodes on the rig (rig.py): a cloud VM behind a 1:1 NAT reached by its
announced or observed public address, found through the DHT and dialed directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nat_harness import Punch, is_kind, relay_addr, start_dialer, start_relay
from rig import (
    LAN_HOST,
    NAT_WAN,
    RELAY_IP,
    UPNP_HOST,
    UPNP_PEERS,
    UPNP_WAN,
    NatRig,
    miniupnpd_unavailable_reason,
)

pytestmark = pytest.mark.slow
CLOUD_PUBLIC = f"/ip4/{NAT_WAN['c']}/tcp/4001"


def start_cloud_listener(rig: NatRig, relay_id: str, namespace: str, *extra: str) -> Punch:
    return Punch(rig, "c", "cloud", ["listener", "--listen-addr", "0.0.0.0", "--port", "4001", "--ephemeral",
                                     "--bootstrap", relay_addr(relay_id), "--namespace", namespace,
                                     "--no-mdns", "--no-port-mapping", *extra])


def test_cloud_vm_announced_address_reached_on_first_dial(make_rig, tmp_path: Path) -> None:
    """--announce: the provider record carries the public address only; the outside
    dialer's first (and only) connection goes straight to it."""
    rig = make_rig(cloud=True)
    relay = start_relay(rig, tmp_path / "relay", "--no-mdns", "--no-port-mapping")
    rid = relay.peer_id
    lis = start_cloud_listener(rig, rid, "vm1", "--announce", CLOUD_PUBLIC)
    listening = lis.wait_for(is_kind("listening"), 90, "listening")
    assert [a.split("/p2p/")[0] for a in listening["addrs"]] == [CLOUD_PUBLIC], listening
    lis.wait_for(is_kind("registered"), 60, "provider record")
    dialer = start_dialer(rig, "pub", rid, "vm1", "--count", "2", "--interval", "0.3", "--timeout", "60",
                          "--no-mdns", "--no-port-mapping")
    assert dialer.wait_exit(90) == 0, dialer.events[-6:]
    found = dialer.wait_for(is_kind("discovered", peer_id=lis.peer_id), 1, "discovery of the listener")
    assert [a.split("/p2p/")[0] for a in found["addrs"]] == [CLOUD_PUBLIC], found
    conns = [e for e in dialer.kinds("connected") if e["peer_id"] == lis.peer_id]
    assert len(conns) == 1 and conns[0]["via"] == "direct" and conns[0]["addr"].startswith(CLOUD_PUBLIC), conns
    assert not [e for e in dialer.kinds("error") if lis.peer_id in str(e)], dialer.kinds("error")
    replies = [e for e in dialer.kinds("reply") if e["peer_id"] == lis.peer_id and e["ok"]]
    assert len(replies) >= 2
    inbound = lis.wait_for(is_kind("connected", peer_id=dialer.peer_id), 5, "inbound connection")
    assert inbound["via"] == "direct"
    assert LAN_HOST["c"] not in str(found)


def test_cloud_vm_advertises_its_observed_address_after_two_outside_peers(make_rig, tmp_path: Path) -> None:
    """No --announce: two peers in two other networks dial the public address, and the
    public address is advertised; a third peer that finds the node through the DHT dials it
    directly. (The relay's AutoNAT dial-back may confirm it first: both paths lead here;
    the two-network rule alone is proven in tests/unit/test_patches.py and
    tests/unit/test_observed_addrs.py.)"""
    rig = make_rig(cloud=True, outside=2)
    relay = start_relay(rig, tmp_path / "relay", "--no-mdns", "--no-port-mapping")
    rid = relay.peer_id
    lis = start_cloud_listener(rig, rid, "vm2")
    listening = lis.wait_for(is_kind("listening"), 90, "listening")
    assert all(NAT_WAN["c"] not in a for a in listening["addrs"]), listening  # not known yet
    lis.wait_for(is_kind("registered"), 60, "provider record")
    me = lis.peer_id
    outside = [Punch(rig, f"out{n}", f"out{n}", ["listener", "--listen-addr", "0.0.0.0", "--port", "4001",
                                                  "--ephemeral", "--namespace", f"other{n}", "--no-mdns",
                                                  "--no-port-mapping", "--bootstrap", f"{CLOUD_PUBLIC}/p2p/{me}"])
               for n in (1, 2)]
    for peer in outside:
        peer.wait_for(is_kind("bootstrapped"), 90, "bootstrapped on the cloud node")
    changed = lis.wait_for(lambda e: e.get("event") == "addrs_changed" and
                           e["addrs"][0].startswith(CLOUD_PUBLIC + "/p2p/"), 30, "observed address advertised")
    assert changed["addrs"][0] == f"{CLOUD_PUBLIC}/p2p/{me}", changed
    # the record made after the change carries it; a third peer finds and dials it directly
    lis.wait_for(lambda e: e.get("event") == "registered" and e["_t"] > changed["_t"], 30, "re-provide")
    dialer = start_dialer(rig, "pub", rid, "vm2", "--count", "2", "--interval", "0.3", "--timeout", "60",
                          "--no-mdns", "--no-port-mapping")
    code = dialer.wait_exit(90)
    assert code == 0, '\n'.join(json.dumps(e)[:400] for e in dialer.events)
    found = dialer.wait_for(is_kind("discovered", peer_id=me), 1, "discovery of the listener")
    assert found["addrs"][0].startswith(CLOUD_PUBLIC), found
    conns = [e for e in dialer.kinds("connected") if e["peer_id"] == me]
    assert conns and conns[0]["via"] == "direct" and conns[0]["addr"].startswith(CLOUD_PUBLIC), conns


def test_mdns_two_nodes_on_one_lan_without_bootstrap(make_rig, tmp_path: Path) -> None:
    """Two nodes on one bridge, no bootstrap node: mDNS finds the listener, the dialer's
    namespace lookup (through the routing table mDNS filled) finds it, and it replies."""
    rig = make_rig()
    conf = tmp_path / "nobootstrap.toml"
    conf.write_text("[node]\nbootstrap = []\n")
    common = ["--listen-addr", "0.0.0.0", "--ephemeral", "--namespace", "lan", "--config", str(conf),
              "--no-port-mapping"]
    lis = Punch(rig, "relay", "lan_listener", ["listener", "--port", "4001", *common])
    lis.wait_for(is_kind("listening"), 90, "listening")
    dialer = Punch(rig, "pub", "lan_dialer", ["dialer", "--port", "4002", "--count", "3", "--interval", "1",
                                              "--timeout", "30", *common])
    started = dialer.wait_for(is_kind("listening"), 90, "listening")
    found = dialer.wait_for(is_kind("mdns_peer", peer_id=lis.peer_id), 20, "mDNS discovery")
    seconds = found["_t"] - started["_t"]
    print(f"mDNS discovery: {seconds:.2f} s after the dialer listened")
    assert any(RELAY_IP in a for a in found["addrs"]) and not any("0.0.0.0" in a for a in found["addrs"]), found
    assert dialer.wait_exit(60) == 0, dialer.events[-8:]
    replies = [e for e in dialer.kinds("reply") if e["peer_id"] == lis.peer_id and e["ok"]]
    assert len(replies) >= 3
    # the dialer's own announcement (sent once its name is probed, ~1.5 s) reached the listener
    lis.wait_for(is_kind("mdns_peer", peer_id=dialer.peer_id), 10, "the listener finds the dialer too")
    assert seconds < 5, seconds  # target 2 s; generous for a loaded machine


@pytest.mark.parametrize("protocol", ["upnp", "natpmp"])
def test_upnp_mapping_lets_an_outside_dialer_in_directly(make_rig, tmp_path: Path, protocol: str) -> None:
    """A listener behind a home router running miniupnpd (UPnP IGD, or NAT-PMP only) maps
    its port at start; an outside dialer that finds it through the DHT connects straight to
    the mapped address (no relay, no hole punch); the mapping is gone once the listener exits."""
    reason = miniupnpd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    rig = make_rig(upnp=True)
    rig.start_miniupnpd(upnp=protocol == "upnp", natpmp=protocol == "natpmp")
    boot = f"/ip4/{UPNP_PEERS['relay']}/tcp/4001"
    relay = start_relay(rig, tmp_path / "relay", "--no-mdns", "--no-port-mapping")
    rid = relay.peer_id
    lis = Punch(rig, "u", "upnp_listener", ["listener", "--listen-addr", "0.0.0.0", "--port", "4001", "--ephemeral",
                                            "--bootstrap", f"{boot}/p2p/{rid}", "--namespace", "home", "--no-mdns",
                                            "--no-hole-punch"])
    started = lis.wait_for(is_kind("listening"), 90, "listening")
    mapped = lis.wait_for(is_kind("port_mapped"), 30, "port mapping")
    seconds = mapped["_t"] - started["_t"]
    print(f"{protocol}: mapped {seconds:.2f} s after listening, "
          f"{mapped['_t'] - lis.started:.2f} s after the process started")
    assert mapped["gateway"].startswith("NAT-PMP") == (protocol == "natpmp"), mapped
    public = f"/ip4/{UPNP_WAN}/tcp/4001"
    assert mapped["external"] == public and mapped["internal"] == f"/ip4/{UPNP_HOST}/tcp/4001", mapped
    assert mapped["lease"] > 0 and not mapped["removed"]
    assert "4001" in rig.upnp_redirects(), rig.upnp_redirects()
    changed = lis.wait_for(lambda e: e.get("event") == "addrs_changed" and e["addrs"][0].startswith(public), 10,
                           "mapped address advertised")
    lis.wait_for(lambda e: e.get("event") == "registered" and e["_t"] >= changed["_t"], 30, "re-provide")
    dialer = Punch(rig, "pub", "upnp_dialer", ["dialer", "--listen-addr", "0.0.0.0", "--port", "4002", "--ephemeral",
                                               "--bootstrap", f"{boot}/p2p/{rid}", "--namespace", "home", "--no-mdns",
                                               "--no-port-mapping", "--count", "2", "--interval", "0.3",
                                               "--timeout", "60"])
    code = dialer.wait_exit(90)
    assert code == 0, "\n".join(json.dumps(e)[:300] for e in dialer.events)
    conns = [e for e in dialer.kinds("connected") if e["peer_id"] == lis.peer_id]
    assert conns and all(e["via"] == "direct" for e in conns) and conns[0]["addr"].startswith(public), conns
    assert not dialer.kinds("hole_punch") and not lis.kinds("reservation")
    lis.stop()
    assert "4001" not in rig.upnp_redirects(), rig.upnp_redirects()
    assert lis.kinds("port_mapped")[-1]["removed"] is True


def test_home_router_port_forward_advertised_once_autonat_confirms(make_rig, tmp_path: Path) -> None:
    """The issue's measured case: a router forwards public port 4001 to the listener by hand.
    AutoNAT judges it public; the address its dial-back connection observed is then
    advertised, and a public dialer that finds it through the DHT connects directly."""
    rig = make_rig(forward=("a",))
    relay = start_relay(rig, tmp_path / "relay", "--no-mdns", "--no-port-mapping")
    rid = relay.peer_id
    public = f"/ip4/{NAT_WAN['a']}/tcp/4001"
    lis = Punch(rig, "a", "home", ["listener", "--listen-addr", "0.0.0.0", "--port", "4001", "--ephemeral",
                                   "--bootstrap", relay_addr(rid), "--namespace", "fw", "--no-mdns",
                                   "--no-port-mapping", "--no-hole-punch"])
    assert lis.wait_for(is_kind("reachability"), 60, "AutoNAT verdict")["status"] == "public"
    changed = lis.wait_for(lambda e: e.get("event") == "addrs_changed" and e["addrs"][0].startswith(public), 20,
                           "forwarded address advertised")
    lis.wait_for(lambda e: e.get("event") == "registered" and e["_t"] >= changed["_t"], 30, "re-provide")
    dialer = start_dialer(rig, "pub", rid, "fw", "--count", "2", "--interval", "0.3", "--timeout", "60",
                          "--no-mdns", "--no-port-mapping")
    code = dialer.wait_exit(90)
    assert code == 0, "\n".join(json.dumps(e)[:300] for e in dialer.events)
    conns = [e for e in dialer.kinds("connected") if e["peer_id"] == lis.peer_id]
    assert conns and conns[0]["via"] == "direct" and conns[0]["addr"].startswith(public), conns
