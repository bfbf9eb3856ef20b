"""NAT traversal parts that need no namespaces: pure helpers, wire parsing, the two
flag/config errors (the py-libp2p patches the relay work relies on: tests/*/test_patches.py).
In-process hosts listen on 127.0.0.1 only."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import time
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit
from libp2p.relay.circuit_v2.pb.circuit_pb2 import Reservation as PbReservation
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from punch_harness import silent_port

from punch_net.api import NodeError
from punch_net.config import NodeConfig
from punch_net.p2p.helpers import quiet_libp2p_logging
from punch_net.relay import hop
from punch_net.relay.dcutr import is_public_ip, predict_addrs, punchable, tcp_ip_port
from punch_net.relay.dcutr_core import (
    MalformedMessage,
    Message,
    MessageType,
    classify_error,
    decode_message,
    encode_message,
)
from punch_net.relay.outcomes import HolePunchRecord, Outcome, count_outcomes
from punch_net.runtime import Runtime

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


def test_dcutr_messages_are_libp2p_holepunch_protobufs() -> None:
    """The core's hand-written codec against the protoc-generated HolePunch, bytes both ways."""
    wire = encode_message(MessageType.CONNECT, ["/ip4/198.18.0.11/tcp/4001", "not an address"])
    back = HolePunch()
    back.ParseFromString(wire)
    assert back.type == HolePunch.CONNECT
    assert [bytes(a) for a in back.ObsAddrs] == [multiaddr.Multiaddr("/ip4/198.18.0.11/tcp/4001").to_bytes()]
    back.ObsAddrs.append(b"\xff\xfe")
    assert decode_message(back.SerializeToString()) == Message(MessageType.CONNECT, ("/ip4/198.18.0.11/tcp/4001",))
    assert encode_message(MessageType.SYNC, []) == HolePunch(type=HolePunch.SYNC).SerializeToString()


def test_dcutr_decoder_accepts_and_refuses_what_protobuf_does() -> None:
    """Random junk and spliced fields (unknown fields, groups, bad enums, truncation) parse
    the same way, or fail, in the core and in protobuf's own parser."""
    rng = random.Random(7)
    pieces = [b"\x08\x64", b"\x08\xac\x02", b"\x08\x05", b"\x08", b"\x12", b"\x12\x02\xff\xfe", b"\x10\x01",
              b"\x12\x08" + multiaddr.Multiaddr("/ip4/1.2.3.4/tcp/5").to_bytes(), b"\x1a\x01x", b"\x0a\x01x",
              b"\x15abcd", b"\x11abcdefgh", b"\x00", b"\x0b", b"\x0c", b"\x80", b"\xff", b"\x12\x00", b"\x13\x14"]
    for _ in range(3000):
        if rng.random() < 0.3:
            data = rng.randbytes(rng.randint(0, 8))
        else:
            data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))
        msg = HolePunch()
        try:
            msg.ParseFromString(data)
        except Exception:
            with pytest.raises(MalformedMessage):
                decode_message(data)
            continue
        addrs = []
        for raw in msg.ObsAddrs:
            try:
                addrs.append(str(multiaddr.Multiaddr(bytes(raw))))
            except Exception:
                continue
        assert decode_message(data) == Message(MessageType(msg.type), tuple(addrs)), data


def test_outcome_counts_have_every_label_in_order() -> None:
    recs = [HolePunchRecord("p", "initiator").finish(o) for o in (Outcome.SUCCESS, Outcome.SUCCESS, Outcome.TIMEOUT)]
    recs.append(HolePunchRecord("p", "initiator"))  # unfinished: not counted
    counts = count_outcomes(recs)
    assert list(counts) == ["SUCCESS", "FAILED", "TIMEOUT", "CONNECTION_REVERSED", "NO_CONNECTION",
                            "PROTOCOL_ERROR", "CANCELLED"]
    assert counts["SUCCESS"] == 2 and counts["TIMEOUT"] == 1 and sum(counts.values()) == 3
    assert classify_error("ValueError", "bad varint") is Outcome.PROTOCOL_ERROR
    assert classify_error("OSError", "stream reset") is Outcome.CANCELLED
    rec = HolePunchRecord("p", "responder", started=time.time() - 0.25).finish(Outcome.FAILED, "x")
    assert 200 < rec.ms < 5000 and rec.error == "x"


# ---------------------------------------------------------------- relay on loopback (no NAT needed)


async def test_loopback_relay_refuses_second_reservation_and_unknown_circuit() -> None:
    base = dict(listen_addr="127.0.0.1", port=0, ephemeral=True, dial_timeout=5, hole_punch=False,
                auto_relay=False)
    async with trio.open_nursery() as nursery:
        relay_rt = Runtime(NodeConfig(role="server", bootstrap=[], relay_max_reservations=1, **base))  # type: ignore[arg-type]
        relay = relay_rt.node
        await nursery.start(relay.run)
        raddr = relay.listen_addrs()[0]
        a_rt = Runtime(NodeConfig(role="listener", bootstrap=[], relays=[raddr], **base))  # type: ignore[arg-type]
        b_rt = Runtime(NodeConfig(role="listener", bootstrap=[], relays=[raddr], **base))  # type: ignore[arg-type]
        a, b = a_rt.node, b_rt.node
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
        st = relay_rt.relay.status()
        assert st.service_enabled and [r.peer_id for r in st.served_reservations] == [str(a.peer_id)]
        assert st.service_counters["reservations_refused"] >= 1
        held = a_rt.relay.status().reservations
        assert held[0].state == "active" and held[0].expires_in() > 3000
        assert a_rt.relay.status().circuit_addrs == held[0].circuit_addrs
        assert any("/p2p-circuit" in str(x) for x in a.host.get_addrs())
        dialer = Runtime(NodeConfig(role="dialer", bootstrap=[], **base)).node  # type: ignore[arg-type]
        await nursery.start(dialer.run)
        with trio.fail_after(45):
            assert await dialer.dial(held[0].circuit_addrs[0]) == a.peer_id
            resp = await dialer.send_command(a.peer_id, "echo", {"x": 1})
        assert resp == {"x": 1}
        assert [c.via for c in dialer.connections() if c.peer_id == str(a.peer_id)] == ["relay"]
        circuits = relay_rt.relay.status().served_circuits
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
        relay = Runtime(NodeConfig(role="server", bootstrap=[], **base)).node  # type: ignore[arg-type]
        await nursery.start(relay.run)
        a_rt = Runtime(NodeConfig(role="listener", bootstrap=[], relays=[relay.listen_addrs()[0]], **base))  # type: ignore[arg-type]
        a = a_rt.node
        with a.bus.subscribe() as events:
            await nursery.start(a.run)
            with trio.fail_after(60):
                async for e in events:
                    if e.kind == "reservation":
                        break
        circuit = multiaddr.Multiaddr(a_rt.relay.status().reservations[0].circuit_addrs[0])
        dialer = Runtime(NodeConfig(role="dialer", bootstrap=[], **base)).node  # type: ignore[arg-type]
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
        second = Runtime(NodeConfig(role="dialer", bootstrap=[], **base)).node  # type: ignore[arg-type]
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
    real_ask = manager.ask_with_addr

    async def counting_ask(service, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = trio.current_time()
        try:
            return await real_ask(service, *args, **kwargs)
        finally:
            if service is node_rt.relay.autonat:
                asked.append((start, trio.current_time()))

    monkeypatch.setattr(manager, "ask_with_addr", counting_ask)
    base = dict(listen_addr="127.0.0.1", port=0, ephemeral=True, dial_timeout=5, hole_punch=False,
                auto_relay=False)
    async with trio.open_nursery() as nursery:
        server = Runtime(NodeConfig(role="server", bootstrap=[], **base)).node  # type: ignore[arg-type]
        await nursery.start(server.run)
        node_rt = Runtime(NodeConfig(role="listener", bootstrap=[server.listen_addrs()[0]], **base))  # type: ignore[arg-type]
        await nursery.start(node_rt.node.run)
        with trio.fail_after(30):
            # The server answers (with a refusal) once identify has run. Wait for enough asks
            # to measure four waits at the ceiling, however slow the machine: the proof is
            # in the measured gaps between asks, not in how many fit in a fixed window.
            while len(asked) < 8:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert node_rt.relay.reachability_checked is None  # never a verdict
    waits = [b[0] - a[1] for a, b in itertools.pairwise(asked)]  # from one ask's answer to the next ask
    assert len(waits[3:]) >= 4, waits
    assert all(w >= 0.35 for w in waits[3:]), waits  # 0.1, 0.2, 0.4, then 0.4 each (a load only lengthens them)
