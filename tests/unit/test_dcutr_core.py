"""The sans-IO DCUtR core, driven by hand and against itself: no sockets, no trio, a fed-in clock."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import multiaddr
import pytest

from punch_net.relay import dcutr_core as core
from punch_net.relay.dcutr_core import (
    MAX_ADDRS,
    MAX_MESSAGE,
    Action,
    CheckConnections,
    CloseStream,
    Dial,
    DialBack,
    Done,
    Initiator,
    MessageType,
    OpenStream,
    Receive,
    Responder,
    Send,
    StartTimer,
    State,
    UsageError,
    decode_message,
    encode_message,
    encode_uvarint,
    frame,
)
from punch_net.relay.outcomes import Outcome

A_ADDRS = ["/ip4/198.18.0.11/tcp/4001", "/ip4/10.0.1.2/tcp/4001"]
B_ADDRS = ["/ip4/198.18.0.12/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]  # loopback is not punchable
A_PUNCH = ("/ip4/198.18.0.11/tcp/4001", "/ip4/10.0.1.2/tcp/4001")
B_PUNCH = ("/ip4/198.18.0.12/tcp/4001",)


def connect(addrs: list[str]) -> bytes:
    return frame(encode_message(MessageType.CONNECT, addrs))


SYNC = frame(encode_message(MessageType.SYNC, []))


def outcome(actions: list[Action]) -> Outcome:
    assert isinstance(actions[-1], Done), actions
    return actions[-1].outcome


def opened_initiator(now: float = 0.0, max_attempts: int = 3) -> Initiator:
    """An initiator whose first round has sent CONNECT at `now` and waits for the answer."""
    b = Initiator(max_attempts)
    assert b.start(now, direct=False, relayed=True, known_addrs=[]) == [StartTimer(now + 10), OpenStream()]
    assert b.stream_opened(now, B_ADDRS) == [StartTimer(now + 10), Send(connect(B_ADDRS)), Receive()]
    return b


def waiting_responder(now: float = 0.0, attempt: int = 1) -> Responder:
    a = Responder(attempt)
    assert a.start(now, A_ADDRS) == [StartTimer(now + 10), Receive()]
    return a


# ---------------------------------------------------------------- both sides against each other


@dataclass
class Run:
    """What a simulated session pair did: B's Done, every A session, and who dialled when."""

    done: Done
    responders: list[Responder] = field(default_factory=list)
    b_dials: list[tuple[float, Dial]] = field(default_factory=list)  # (when B starts dialling, the action)
    a_dials: list[tuple[float, Dial]] = field(default_factory=list)  # (when A got the SYNC, the action)
    checks: int = 0


def play(b: Initiator, punches: list[bool], delay: float = 0.25, direct_after: int | None = None) -> Run:
    """B against a fresh A per round (each round is a new stream), messages `delay` s each way.

    punches[i]: whether round i's simultaneous dial connects. direct_after: from that
    connection check on, the peer reports a direct connection (its own dial got through).
    """
    now = 0.0
    actions = b.start(now, direct=False, relayed=True, known_addrs=[])
    run = Run(Done(Outcome.CANCELLED, "", 0, (), "", 0.0))
    a: Responder | None = None
    to_b: list[tuple[float, bytes]] = []
    while actions:
        act = actions.pop(0)
        match act:
            case StartTimer() | CloseStream():
                pass
            case OpenStream():
                now += delay  # the stream negotiation
                a = Responder(len(run.responders) + 1)
                run.responders.append(a)
                assert a.start(now, A_ADDRS) == [StartTimer(now + 10), Receive()]
                actions = b.stream_opened(now, B_ADDRS)
            case Send(data):
                assert a is not None
                arrival = now + delay
                for reply in a.receive_data(data, arrival):
                    if isinstance(reply, Send):
                        to_b.append((arrival + delay, reply.data))
                    elif isinstance(reply, Dial):
                        run.a_dials.append((arrival, reply))
            case Receive():
                now, data = to_b.pop(0)
                actions = b.receive_data(data, now)
            case Dial():
                assert a is not None
                now += act.delay  # Send(SYNC) and CloseStream took no time here
                run.b_dials.append((now, act))
                ok = punches[len(run.b_dials) - 1]
                now += 0.5
                assert a.dial_result(ok, "/ip4/198.18.0.12/tcp/4001" if ok else "") == [a.done]
                actions = b.dial_result(ok, "/ip4/198.18.0.11/tcp/4001" if ok else "")
            case CheckConnections():
                run.checks += 1
                direct = direct_after is not None and run.checks >= direct_after
                actions = b.connections(now, direct=direct, relayed=True)
            case Done():
                run.done = act
                assert not actions
                return run
    raise AssertionError("the initiator stopped without Done")


def test_happy_path_both_syns_leave_at_the_same_moment() -> None:
    run = play(Initiator(), [True], delay=0.25)
    assert run.done == Done(Outcome.SUCCESS, "", 1, A_PUNCH, "/ip4/198.18.0.11/tcp/4001", 500.0)
    ((b_time, b_dial),) = run.b_dials
    ((a_time, a_dial),) = run.a_dials
    # B got CONNECT at 0.75 (RTT 0.5) and sends SYNC; A gets it 0.25 later: both dial at 1.0
    assert b_dial == Dial(A_PUNCH, delay=0.25, timeout=6.0, as_responder=True)
    assert a_dial == Dial(B_PUNCH, delay=0.0, timeout=6.0, as_responder=False)
    assert b_time == a_time + a_dial.delay == 1.0
    (a,) = run.responders
    assert a.done == Done(Outcome.SUCCESS, "", 1, B_PUNCH, "/ip4/198.18.0.12/tcp/4001", 0.0)


def test_the_dial_waits_half_the_measured_round_trip() -> None:
    b = opened_initiator(now=100.0)
    actions = b.receive_data(connect(A_ADDRS), 100.5)  # RTT 0.5 s
    assert actions == [Send(SYNC), CloseStream(), Dial(A_PUNCH, delay=0.25, timeout=6.0, as_responder=True)]
    assert b.rtt_ms == 500.0 and b.state is State.PUNCHING


def test_retries_up_to_the_maximum_with_a_new_stream_each_round() -> None:
    run = play(Initiator(), [False, False, False, True])
    assert run.done == Done(Outcome.FAILED, "no direct connection", 3, A_PUNCH, "", 500.0)
    assert len(run.b_dials) == 3 and run.checks == 2  # a look at the connections between rounds
    assert [(a.done.outcome, a.done.attempts) for a in run.responders if a.done] == [
        (Outcome.FAILED, 1), (Outcome.FAILED, 2), (Outcome.FAILED, 3)]


def test_a_later_round_can_succeed_and_max_attempts_is_a_parameter() -> None:
    run = play(Initiator(), [False, True])
    assert run.done.outcome is Outcome.SUCCESS and run.done.attempts == 2
    run = play(Initiator(max_attempts=1), [False])
    assert run.done.outcome is Outcome.FAILED and run.done.attempts == 1 and run.checks == 0


def test_a_direct_connection_between_rounds_counts_as_success() -> None:
    run = play(Initiator(), [False, False], direct_after=1)
    assert run.done == Done(Outcome.SUCCESS, "", 2, A_PUNCH, "", 500.0)
    assert len(run.b_dials) == 1


# ---------------------------------------------------------------- framing


def test_frames_split_across_many_calls() -> None:
    a = waiting_responder()
    data = connect(B_ADDRS) + SYNC
    for i in range(len(data) - len(SYNC) - 1):
        assert a.receive_data(data[i:i + 1], 1.0) == [Receive()]
    send, receive = a.receive_data(data[len(data) - len(SYNC) - 1:len(data) - len(SYNC)], 1.0)
    assert send == Send(connect(A_ADDRS)) and receive == Receive()
    for byte in SYNC[:-1]:
        assert a.receive_data(bytes([byte]), 2.0) == [Receive()]
    assert a.receive_data(SYNC[-1:], 2.0) == [Dial(B_PUNCH, delay=0.0, timeout=6.0, as_responder=False)]


def test_connect_and_sync_in_one_chunk_are_both_handled() -> None:
    a = waiting_responder()
    assert a.receive_data(connect(B_ADDRS) + SYNC, 3.0) == [
        Send(connect(A_ADDRS)), Dial(B_PUNCH, delay=0.0, timeout=6.0, as_responder=False)]


def test_oversized_frame_is_refused_before_its_body_arrives() -> None:
    a = waiting_responder()
    assert a.receive_data(encode_uvarint(MAX_MESSAGE + 1), 1.0) == [
        Done(Outcome.PROTOCOL_ERROR, "Message length 4097 exceeds maximum allowed 4096", 1, (), "", 0.0)]
    # exactly the limit is fine: a CONNECT padded with an unknown field
    payload = encode_message(MessageType.CONNECT, B_ADDRS)
    pad = MAX_MESSAGE - len(payload) - 3
    payload += b"\x1a" + encode_uvarint(pad) + b"x" * pad
    assert len(payload) == MAX_MESSAGE
    assert isinstance(waiting_responder().receive_data(frame(payload), 1.0)[0], Send)


def test_a_framing_error_ends_the_round_and_the_initiator_retries() -> None:
    b = opened_initiator()
    assert b.receive_data(b"\xff" * 10, 1.0) == [CloseStream(), CheckConnections()]
    assert b.connections(1.0, direct=False, relayed=True) == [StartTimer(11.0), OpenStream()]
    assert b.attempts == 2


def test_the_stream_ending_mid_frame() -> None:
    a = waiting_responder()
    assert a.receive_data(b"", 1.0)[0] == Done(
        Outcome.PROTOCOL_ERROR, "Stream ended while reading varint length prefix", 1, (), "", 0.0)
    a = waiting_responder()
    assert a.receive_data(b"\x0a\x08\x64", 1.0) == [Receive()]
    assert a.receive_data(b"", 1.0)[0] == Done(Outcome.PROTOCOL_ERROR, "Incomplete message: expected 10, got 2",
                                               1, (), "", 0.0)


# ---------------------------------------------------------------- bad messages


@pytest.mark.parametrize("payload, reason", [
    (b"\x08", "truncated varint"),
    (b"\x12\x05ab", "truncated field"),
    (b"\x00", "field number 0"),
    (b"\x0c", "unexpected wire type 4"),
    (b"\x0b" * 101, "groups nested too deep"),
])
def test_malformed_protobuf_ends_the_session_on_both_sides(payload: bytes, reason: str) -> None:
    error = f"undecodable DCUtR message: {reason}"
    assert waiting_responder().receive_data(frame(payload), 1.0) == [
        Done(Outcome.PROTOCOL_ERROR, error, 1, (), "", 0.0)]
    assert opened_initiator().receive_data(frame(payload), 1.0) == [
        CloseStream(), Done(Outcome.PROTOCOL_ERROR, error, 1, (), "", 0.0)]  # no retry


def test_wrong_message_types() -> None:
    assert waiting_responder().receive_data(SYNC, 1.0) == [
        Done(Outcome.PROTOCOL_ERROR, "expected DCUtR CONNECT, got type 300", 1, (), "", 0.0)]
    twice = waiting_responder().receive_data(connect(B_ADDRS) * 2, 1.0)
    assert twice[1] == Done(Outcome.PROTOCOL_ERROR, "expected DCUtR SYNC, got type 100", 1, B_PUNCH, "", 0.0)
    assert opened_initiator().receive_data(SYNC, 1.0) == [
        CloseStream(), Done(Outcome.PROTOCOL_ERROR, "expected DCUtR CONNECT, got type 300", 1, (), "", 0.0)]


def test_no_usable_address() -> None:
    useless = ["/ip4/127.0.0.1/tcp/1", "/ip4/0.0.0.0/tcp/2", "/ip4/198.18.0.10/tcp/4001/p2p-circuit", "/dns4/x/tcp/3"]
    a = waiting_responder()
    assert a.receive_data(connect(useless), 1.0) == [Send(connect(A_ADDRS)), Receive()]
    assert a.receive_data(SYNC, 1.0) == [Done(Outcome.FAILED, "peer sent no punchable address", 1, (), "", 0.0)]
    # B still sends SYNC (A may dial it), then gives up without a retry
    assert opened_initiator().receive_data(connect(useless), 0.5) == [
        Send(SYNC), CloseStream(), Done(Outcome.PROTOCOL_ERROR, "peer sent no punchable address", 1, (), "", 500.0)]


def test_at_most_max_addrs_are_dialled() -> None:
    many = [f"/ip4/198.18.1.{i}/tcp/4001" for i in range(MAX_ADDRS + 4)]
    a = waiting_responder()
    a.receive_data(connect(many), 1.0)
    assert list(a.remote_addrs) == many[:MAX_ADDRS]


# ---------------------------------------------------------------- outcomes, one by one


def test_outcome_success_and_failed() -> None:
    assert play(Initiator(), [True]).done.outcome is Outcome.SUCCESS
    assert play(Initiator(), [False] * 3).done.outcome is Outcome.FAILED


def test_outcome_timeout() -> None:
    b = opened_initiator(max_attempts=1)
    assert b.timer_fired(9.0) == []  # early: nothing was cut off
    assert b.timer_fired(10.0) == [CloseStream(), Done(Outcome.TIMEOUT, "DCUtR exchange took over 10 s", 1, (), "",
                                                       0.0)]
    a = waiting_responder(now=5.0)
    assert outcome(a.timer_fired(15.0)) is Outcome.TIMEOUT
    b = Initiator()  # opening the stream times out: nothing to close, try again
    b.start(0.0, direct=False, relayed=True, known_addrs=[])
    assert b.timer_fired(10.0) == [CheckConnections()]


def test_outcome_connection_reversed() -> None:
    b = Initiator()
    assert b.start(0.0, direct=True, relayed=True, known_addrs=[]) == [
        Done(Outcome.CONNECTION_REVERSED, "peer is already directly connected", 0, (), "", 0.0)]
    b = Initiator()
    known = ["/ip4/10.0.1.2/tcp/4001", "/ip4/198.18.0.11/tcp/4001", "/ip4/198.18.0.11/tcp/4001/p2p-circuit"]
    assert b.start(2.0, direct=False, relayed=True, known_addrs=known) == [
        DialBack(("/ip4/198.18.0.11/tcp/4001",), timeout=3.0)]  # only the public, plain one
    assert b.dial_result(True) == [
        Done(Outcome.CONNECTION_REVERSED, "reached the peer by a plain dial", 0, (), "", 0.0)]
    b = Initiator()  # a failed dial back goes on to punching
    b.start(2.0, direct=False, relayed=True, known_addrs=known)
    assert b.dial_result(False) == [CheckConnections()]
    assert b.connections(5.0, direct=False, relayed=True) == [StartTimer(15.0), OpenStream()]


def test_outcome_no_connection() -> None:
    b = Initiator()
    assert b.start(0.0, direct=False, relayed=False, known_addrs=[]) == [
        Done(Outcome.NO_CONNECTION, "no relayed connection to the peer", 0, (), "", 0.0)]
    b = opened_initiator()  # the stream is reset and the relayed connection is gone
    assert b.io_error("StreamReset", "") == [CloseStream(), CheckConnections()]
    assert b.connections(1.0, direct=False, relayed=False) == [
        Done(Outcome.NO_CONNECTION, "relayed connection closed", 2, (), "", 0.0)]
    b = opened_initiator(max_attempts=1)  # the same in the last round keeps the error text
    b.io_error("StreamReset", "")
    assert b.connections(1.0, direct=False, relayed=False) == [
        Done(Outcome.NO_CONNECTION, "StreamReset", 1, (), "", 0.0)]


def test_outcome_protocol_error_and_cancelled() -> None:
    b = opened_initiator(max_attempts=1)
    assert b.io_error("StreamError", "yamux said no") == [CloseStream(), Done(Outcome.PROTOCOL_ERROR, "yamux said no",
                                                                             1, (), "", 0.0)]
    b = opened_initiator(max_attempts=1)  # a reset in the last round with the relay still up
    b.io_error("StreamEOF", "")
    assert b.connections(1.0, direct=False, relayed=True) == [Done(Outcome.CANCELLED, "StreamEOF", 1, (), "", 0.0)]
    b = opened_initiator()
    b.receive_data(connect(A_ADDRS), 0.25)
    assert b.cancel() == Done(Outcome.CANCELLED, "node stopped", 1, A_PUNCH, "", 250.0)
    assert b.cancel() is b.done and b.state is State.DONE


def test_every_outcome_label_is_reachable() -> None:
    reached = {play(Initiator(), [True]).done.outcome, play(Initiator(), [False] * 3).done.outcome}
    b = opened_initiator(max_attempts=1)
    reached.add(outcome(b.timer_fired(10.0)))
    reached.add(outcome(Initiator().start(0.0, direct=True, relayed=True, known_addrs=[])))
    reached.add(outcome(Initiator().start(0.0, direct=False, relayed=False, known_addrs=[])))
    reached.add(outcome(waiting_responder().receive_data(SYNC, 0.0)))
    reached.add(waiting_responder().cancel().outcome)
    assert reached == set(Outcome)


def test_classify_error_by_type_name_and_text() -> None:
    assert core.classify_error("StreamReset", "") is Outcome.CANCELLED
    assert core.classify_error("OSError", "connection closed") is Outcome.CANCELLED
    assert core.classify_error("StreamEOF", "") is Outcome.CANCELLED
    assert core.classify_error("ParseError", "bad varint") is Outcome.PROTOCOL_ERROR


def test_the_sync_send_can_still_fail_the_round() -> None:
    b = opened_initiator()
    b.receive_data(connect(A_ADDRS), 0.5)
    # the driver reports that Send(SYNC) timed out: the stream is closed again (a no-op if it was)
    assert b.timer_fired(10.0) == [CloseStream(), CheckConnections()]


def test_failing_to_look_at_connections_ends_the_session() -> None:
    b = opened_initiator()
    b.io_error("StreamReset", "")
    assert b.io_error("RuntimeError", "swarm gone") == [
        Done(Outcome.PROTOCOL_ERROR, "swarm gone", 1, (), "", 0.0)]  # rather than asking again for ever
    a = Responder(1)  # start()'s own inputs could not be read
    assert a.io_error("KeyError", "")[0] == Done(Outcome.PROTOCOL_ERROR, "KeyError", 1, (), "", 0.0)


def test_inputs_the_session_did_not_ask_for_are_driver_bugs() -> None:
    b = opened_initiator()
    with pytest.raises(UsageError):
        b.dial_result(True)
    with pytest.raises(UsageError):
        b.connections(0.0, direct=False, relayed=True)
    a = waiting_responder()
    a.cancel()
    with pytest.raises(UsageError):
        a.receive_data(SYNC, 1.0)
    with pytest.raises(UsageError):
        a.io_error("X", "y")
    assert a.timer_fired(100.0) == []  # a late timer is harmless


# ---------------------------------------------------------------- wire format and purity


def test_message_bytes_are_protobufs() -> None:
    raw = multiaddr.Multiaddr("/ip4/198.18.0.11/tcp/4001").to_bytes()
    assert encode_message(MessageType.SYNC, []) == b"\x08\xac\x02"
    assert encode_message(MessageType.CONNECT, ["/ip4/198.18.0.11/tcp/4001", "not an address"]) == (
        b"\x08\x64\x12" + bytes([len(raw)]) + raw)
    msg = decode_message(b"\x08\x64\x12\x02\xff\xfe\x12" + bytes([len(raw)]) + raw + b"\x1d1234")
    assert msg == core.Message(MessageType.CONNECT, ("/ip4/198.18.0.11/tcp/4001",))  # bad address and field 3 skipped
    # like protobuf's Python parser: `type` is not enforced, so missing or unknown reads as CONNECT
    assert decode_message(b"").type is MessageType.CONNECT
    assert decode_message(b"\x08\xac\x02\x08\x05").type is MessageType.SYNC


def test_the_core_imports_nothing_that_does_io() -> None:
    tree = ast.parse(Path(core.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    stdlib = set(sys.stdlib_module_names)
    outside = {name for name in imported if name.split(".")[0] not in stdlib}
    assert outside == {"multiaddr", "punch_net.relay.outcomes"}
    assert not imported & {"time", "socket", "select", "asyncio", "threading"}
