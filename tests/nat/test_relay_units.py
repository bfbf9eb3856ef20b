"""NAT traversal parts that need no namespaces: pure helpers, wire parsing, the two
py-libp2p workarounds the relay work relies on (bug, then fix), and flag/config errors.
In-process hosts listen on 127.0.0.1 only."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit
from libp2p.relay.circuit_v2.pb.circuit_pb2 import Reservation as PbReservation
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from punch_harness import silent_port

from punch_net.config import NodeConfig
from punch_net.node import Node, NodeError
from punch_net.p2p.identity import new_identity
from punch_net.p2p.workarounds import advertise_extra_addrs, forget_dial_failure, quiet_libp2p_logging
from punch_net.relay import hop
from punch_net.relay.dcutr import decode_addrs, encode, is_public_ip, predict_addrs, punchable, tcp_ip_port
from punch_net.relay.outcomes import HolePunchRecord, Outcome, classify_exception, count_outcomes

quiet_libp2p_logging()
PEER_A = "12D3KooWKwSvqEGzR9rorUmC8ZMkjsDi2Ag4pnF2bwf96CzzDrn1"
PEER_R = "12D3KooWFqq1LUdZdocxpG6DBkoyZanRCNAGxf5k2eqPCsmxy44z"


# ---------------------------------------------------------------- pure helpers


def test_predicted_addresses_pair_observed_ip_with_listen_port() -> None:
    observed = ["/ip4/198.18.0.11/tcp/47710", "/ip4/198.18.0.11/tcp/50000", "/ip4/203.0.113.9/tcp/1"]
    listen = ["/ip4/10.0.1.2/tcp/4001", "/ip4/127.0.0.1/tcp/4001", "/ip6/::1/tcp/4001"]
    assert predict_addrs(observed, listen) == ["/ip4/198.18.0.11/tcp/4001", "/ip4/203.0.113.9/tcp/4001"]
    assert predict_addrs([], listen) == []


def test_punchable_drops_circuits_loopback_and_junk() -> None:
    addrs = ["/ip4/127.0.0.1/tcp/1", f"/ip4/198.18.0.10/tcp/4001/p2p/{PEER_R}/p2p-circuit",
             "/ip4/0.0.0.0/tcp/2", "/dns4/x/tcp/3", "/ip4/10.0.1.2/tcp/4001", "/ip4/10.0.1.2/tcp/4001/p2p/x"]
    assert punchable(addrs) == ["/ip4/10.0.1.2/tcp/4001"]
    assert tcp_ip_port("/ip4/1.2.3.4/udp/5") is None


def test_public_ip_counts_the_benchmark_range_as_public() -> None:
    assert is_public_ip("198.18.0.20") and is_public_ip("8.8.8.8")
    assert not any(is_public_ip(ip) for ip in ("10.0.1.2", "192.168.1.1", "172.16.0.1", "100.64.0.1",
                                               "127.0.0.1", "fe80::1", "nonsense"))


def test_circuit_address_round_trip() -> None:
    from libp2p.peer.id import ID

    addr = hop.circuit_addr(f"/ip4/198.18.0.10/tcp/4001/p2p/{PEER_R}", ID.from_base58(PEER_R), ID.from_base58(PEER_A))
    assert addr == f"/ip4/198.18.0.10/tcp/4001/p2p/{PEER_R}/p2p-circuit/p2p/{PEER_A}"
    base, relay, dest = hop.split_circuit_addr(addr)
    assert (base, str(relay), str(dest)) == ("/ip4/198.18.0.10/tcp/4001", PEER_R, PEER_A)
    for bad in ("/ip4/1.2.3.4/tcp/1", f"/ip4/1.2.3.4/tcp/1/p2p-circuit/p2p/{PEER_A}",
                f"/ip4/1.2.3.4/tcp/1/p2p/{PEER_R}/p2p-circuit"):
        with pytest.raises(ValueError):
            hop.split_circuit_addr(bad)


def test_reservation_answers_parse_into_grants_or_named_refusals() -> None:
    from libp2p.peer.id import ID

    relay = ID.from_base58(PEER_R)
    ok = HopMessage(type=HopMessage.STATUS, status=to_proto_status(StatusCode.OK),
                    reservation=PbReservation(expire=2_000_000_000,
                                              addrs=[multiaddr.Multiaddr(f"/ip4/1.2.3.4/tcp/5/p2p/{PEER_R}").to_bytes(),
                                                     b"\xff\xffgarbage"]),
                    limit=Limit(duration=120, data=1 << 17))
    grant = hop.parse_reservation(relay, ok)
    assert grant.expires == 2_000_000_000 and grant.limit_duration == 120 and grant.limit_data == 1 << 17
    assert grant.relay_addrs == [f"/ip4/1.2.3.4/tcp/5/p2p/{PEER_R}"]
    full = HopMessage(type=HopMessage.STATUS, status=to_proto_status(StatusCode.RESOURCE_LIMIT_EXCEEDED))
    with pytest.raises(hop.RelayRefused, match=r"RESOURCE_LIMIT_EXCEEDED \(relay resource limit reached\)"):
        hop.parse_reservation(relay, full)
    with pytest.raises(hop.RelayRefused, match="UNEXPECTED_MESSAGE"):
        hop.parse_reservation(relay, HopMessage(type=HopMessage.CONNECT))


def test_dcutr_messages_round_trip_and_skip_bad_addresses() -> None:
    msg = encode(HolePunch.CONNECT, ["/ip4/198.18.0.11/tcp/4001", "not an address"])
    wire = msg.SerializeToString()
    back = HolePunch()
    back.ParseFromString(wire)
    back.ObsAddrs.append(b"\xff\xfe")
    assert back.type == HolePunch.CONNECT
    assert decode_addrs(back) == ["/ip4/198.18.0.11/tcp/4001"]


def test_outcome_counts_have_every_label_in_order() -> None:
    recs = [HolePunchRecord("p", "initiator").finish(o) for o in (Outcome.SUCCESS, Outcome.SUCCESS, Outcome.TIMEOUT)]
    recs.append(HolePunchRecord("p", "initiator"))  # unfinished: not counted
    counts = count_outcomes(recs)
    assert list(counts) == ["SUCCESS", "FAILED", "TIMEOUT", "CONNECTION_REVERSED", "NO_CONNECTION",
                            "PROTOCOL_ERROR", "CANCELLED"]
    assert counts["SUCCESS"] == 2 and counts["TIMEOUT"] == 1 and sum(counts.values()) == 3
    assert classify_exception(trio.TooSlowError()) is Outcome.TIMEOUT
    assert classify_exception(ValueError("bad varint")) is Outcome.PROTOCOL_ERROR
    assert classify_exception(OSError("stream reset")) is Outcome.CANCELLED
    rec = HolePunchRecord("p", "responder", started=time.time() - 0.25).finish(Outcome.FAILED, "x")
    assert 200 < rec.ms < 5000 and rec.error == "x"


# ---------------------------------------------------------------- workarounds: bug, then fix


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


async def test_bug_and_fix_negative_dial_cache_blocks_a_restarted_peer() -> None:
    cfg = NodeConfig(role="server", listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True, dial_timeout=5)
    key = new_identity()
    async with trio.open_nursery() as nursery:
        client = Node(NodeConfig(role="dialer", listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True,
                                 dial_timeout=5))
        await nursery.start(client.run)
        server = Node(cfg, key_pair=key)
        async with trio.open_nursery() as inner:
            await inner.start(server.run)
            addr = server.listen_addrs()[0]
            port = int(addr.split("/tcp/")[1].split("/")[0])
            inner.cancel_scope.cancel()
        peer = server.peer_id
        info = PeerInfo(peer, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")])
        with pytest.raises(Exception):  # noqa: B017 - the server is gone: any dial error
            await client.host.connect(info)
        server2 = Node(NodeConfig(role="server", listen_addr="127.0.0.1", port=port, bootstrap=[], ephemeral=True),
                       key_pair=key)
        async with trio.open_nursery() as inner:
            await inner.start(server2.run)
            with pytest.raises(Exception, match="recently failed"):  # bug: blocked although it is back
                await client.host.connect(info)
            forget_dial_failure(client.host, peer)  # fix
            with trio.fail_after(10):
                await client.host.connect(info)
            assert client.host.get_network().get_connections(peer)
            inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- relay on loopback (no NAT needed)


async def test_loopback_relay_refuses_second_reservation_and_unknown_circuit() -> None:
    base = dict(listen_addr="127.0.0.1", port=0, ephemeral=True, dial_timeout=5, hole_punch=False,
                auto_relay=False)
    async with trio.open_nursery() as nursery:
        relay = Node(NodeConfig(role="server", bootstrap=[], relay_max_reservations=1, **base))  # type: ignore[arg-type]
        await nursery.start(relay.run)
        raddr = relay.listen_addrs()[0]
        a = Node(NodeConfig(role="listener", bootstrap=[], relays=[raddr], **base))  # type: ignore[arg-type]
        b = Node(NodeConfig(role="listener", bootstrap=[], relays=[raddr], **base))  # type: ignore[arg-type]
        with a.bus.subscribe() as ea, b.bus.subscribe() as eb:
            await nursery.start(a.run)
            with trio.fail_after(60):
                async for e in ea:
                    if e.kind == "reservation":
                        break
            await nursery.start(b.run)
            with trio.fail_after(60):
                async for e in eb:
                    if e.kind == "error" and getattr(e, "where", "") == "relay":
                        assert "RESOURCE_LIMIT_EXCEEDED" in e.message  # type: ignore[attr-defined]
                        break
        st = relay.relay_status()
        assert st.service_enabled and [r.peer_id for r in st.served_reservations] == [str(a.peer_id)]
        assert st.service_counters["reservations_refused"] >= 1
        held = a.relay_status().reservations
        assert held[0].state == "active" and held[0].expires_in() > 3000
        assert a.relay_status().circuit_addrs == held[0].circuit_addrs
        assert any("/p2p-circuit" in str(x) for x in a.host.get_addrs())
        dialer = Node(NodeConfig(role="dialer", bootstrap=[], **base))  # type: ignore[arg-type]
        await nursery.start(dialer.run)
        with trio.fail_after(45):
            assert await dialer.dial(held[0].circuit_addrs[0]) == a.peer_id
            resp = await dialer.send_command(a.peer_id, "echo", {"x": 1})
        assert resp == {"x": 1}
        assert [c.via for c in dialer.connections() if c.peer_id == str(a.peer_id)] == ["relay"]
        circuits = relay.relay_status().served_circuits
        assert circuits and circuits[0].dst == str(a.peer_id) and circuits[0].bytes > 0
        assert circuits[0].bytes_left is not None and circuits[0].bytes_left < relay.config.relay_circuit_bytes
        with trio.fail_after(45), pytest.raises(NodeError, match="NO_RESERVATION"):
            await dialer.dial(f"{raddr}/p2p-circuit/p2p/{b.peer_id}")
        nursery.cancel_scope.cancel()


async def test_a_circuit_is_dialed_soon_when_the_direct_address_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NAT'd peer's direct address mostly leads nowhere: its dial hangs until the deadline.
    connect_peer used to give the direct addresses 3 s before trying a circuit; now circuits
    start RELAY_DELAY (0.5 s) after the direct dial, and the first connection wins. A direct
    dial that fails at once (an unroutable private address) starts the circuits at once."""
    from punch_net.relay import manager
    base = dict(listen_addr="127.0.0.1", port=0, ephemeral=True, dial_timeout=8, hole_punch=False,
                auto_relay=False)

    async with trio.open_nursery() as nursery:
        silent_addr = await silent_port(nursery)
        relay = Node(NodeConfig(role="server", bootstrap=[], **base))  # type: ignore[arg-type]
        await nursery.start(relay.run)
        a = Node(NodeConfig(role="listener", bootstrap=[], relays=[relay.listen_addrs()[0]], **base))  # type: ignore[arg-type]
        with a.bus.subscribe() as events:
            await nursery.start(a.run)
            with trio.fail_after(60):
                async for e in events:
                    if e.kind == "reservation":
                        break
        circuit = multiaddr.Multiaddr(a.relay_status().reservations[0].circuit_addrs[0])
        dialer = Node(NodeConfig(role="dialer", bootstrap=[], **base))  # type: ignore[arg-type]
        await nursery.start(dialer.run)
        with trio.fail_after(8):
            await dialer.host.connect(PeerInfo(relay.peer_id, [multiaddr.Multiaddr(relay.listen_addrs()[0])]))
        start = trio.current_time()
        with trio.fail_after(30):
            await dialer.connect_peer(PeerInfo(a.peer_id, [silent_addr, circuit]))
        took = trio.current_time() - start
        assert [c.via for c in dialer.connections() if c.peer_id == str(a.peer_id)] == ["relay"]
        assert took < 2.0, f"connected after {took:.2f} s"  # was 3 s and more

        monkeypatch.setattr(manager, "RELAY_DELAY", 5.0)  # so only a failed direct dial can start it sooner
        second = Node(NodeConfig(role="dialer", bootstrap=[], **base))  # type: ignore[arg-type]
        await nursery.start(second.run)
        with trio.fail_after(8):
            await second.host.connect(PeerInfo(relay.peer_id, [multiaddr.Multiaddr(relay.listen_addrs()[0])]))
        refused = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/9")
        start = trio.current_time()
        with trio.fail_after(30):
            await second.connect_peer(PeerInfo(a.peer_id, [refused, circuit]))
        took = trio.current_time() - start
        assert [c.via for c in second.connections() if c.peer_id == str(a.peer_id)] == ["relay"]
        assert took < 2.5, f"connected after {took:.2f} s: the circuit waited out RELAY_DELAY"
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- flags and config


def _punch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "punch_net.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, needle", [
    (["server", "--relay-max-reservations", "-1"], "must be 0 or more"),
    (["server", "--relay-max-circuits", "x"], "invalid integer"),
    (["listener", "--relay", "/ip4/1.2.3.4/tcp/nope"], "malformed multiaddr"),
    (["server", "--relay-max-reservations", "0"], "must be at least 1"),
])
def test_bad_relay_flags_fail_with_one_line(args: list[str], needle: str) -> None:
    res = _punch(*args)
    assert res.returncode == 2, res
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_relay_config_section_is_type_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[relay]\nhole_punch = "yes"\n')
    res = _punch("listener", "--config", str(cfg), "--ephemeral")
    assert res.returncode == 2 and "hole_punch has the wrong type" in res.stderr, res.stderr
    from punch_net.config import apply_config

    applied = apply_config(NodeConfig(), {"relay": {"relay_max_reservations": 3, "hole_punch": False,
                                                   "relays": ["/ip4/1.2.3.4/tcp/5"]}})
    assert applied.relay_max_reservations == 3 and applied.hole_punch is False and applied.relays


async def test_reachability_backs_off_while_there_is_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """An AutoNAT server will not dial loopback addresses, so a loopback node never gets a
    verdict. It must back off (3, 6, 12, 24, then every 30 s) instead of asking every 3 s
    for ever: that was most of an idle testnet node's CPU. Run with the times scaled down."""
    from punch_net.relay import manager

    monkeypatch.setattr(manager, "REACH_RETRY", 0.1)
    monkeypatch.setattr(manager, "REACH_MAX_BACKOFF", 0.4)
    asked: list[tuple[float, float]] = []  # the listener's asks, start and end (not the server's own loop)
    real_ask = manager.ask

    async def counting_ask(service, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = trio.current_time()
        try:
            return await real_ask(service, *args, **kwargs)
        finally:
            if node.relay is not None and service is node.relay.autonat:
                asked.append((start, trio.current_time()))

    monkeypatch.setattr(manager, "ask", counting_ask)
    base = dict(listen_addr="127.0.0.1", port=0, ephemeral=True, dial_timeout=5, hole_punch=False,
                auto_relay=False)
    async with trio.open_nursery() as nursery:
        server = Node(NodeConfig(role="server", bootstrap=[], **base))  # type: ignore[arg-type]
        await nursery.start(server.run)
        node = Node(NodeConfig(role="listener", bootstrap=[server.listen_addrs()[0]], **base))  # type: ignore[arg-type]
        await nursery.start(node.run)
        with trio.fail_after(30):
            while len(asked) < 5:  # the server answers (with a refusal) once identify has run
                await trio.sleep(0.05)
        await trio.sleep(1.5)
        nursery.cancel_scope.cancel()
    assert node.relay is not None and node.relay.reachability_checked is None  # never a verdict
    waits = [b[0] - a[1] for a, b in itertools.pairwise(asked)]  # from one ask's answer to the next ask
    assert all(w >= 0.35 for w in waits[3:]), waits  # 0.1, 0.2, 0.4, then 0.4 each (a load only lengthens them)
    assert len(asked) <= 12, waits  # at a fixed 0.1 s it would have asked ~25 times
