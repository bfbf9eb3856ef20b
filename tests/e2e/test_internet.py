"""Internet-ready nodes on the rig (rig.py): a cloud VM behind a 1:1 NAT reached by its
announced or observed public address, found through the DHT and dialed directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from nat_harness import Punch, is_kind, relay_addr, start_dialer, start_relay
from rig import LAN_HOST, NAT_WAN, NatRig

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
