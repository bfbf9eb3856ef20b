"""DCUtR as a sans-IO state machine: no sockets, no trio, no clock (h11's style).

`dcutr.py` explains the protocol; this module holds all of its decisions. A session
(`Initiator` for B, `Responder` for A) is fed inputs and returns a list of actions for
its driver to carry out, in order:

    Initiator.start(now, direct=, relayed=, known_addrs=)   Responder.start(now, our_addrs)
    connections(now, direct=, relayed=)   answers CheckConnections
    stream_opened(now, our_addrs)         answers OpenStream
    receive_data(data, now)               answers Receive; b"" means the stream ended
    dial_result(ok, addr)                 answers Dial / DialBack
    timer_fired(now)                      a stream action outlived the last StartTimer
    io_error(kind, message)               an action, or reading start()'s inputs, raised
                                          (exception type name, text)
    cancel()                              the driver is shutting down; returns the Done

Driver contract: carry out the actions in order. An action that wants an answer
(Receive, OpenStream, CheckConnections, Dial, DialBack) is always the last of its list.
Stream actions (OpenStream, Send, Receive) must finish by the deadline of the last
StartTimer, else call timer_fired. When an action fails or times out, drop the actions
after it: the answer to the failure replaces them. CloseStream may repeat (the answer
to a failure cannot know whether the earlier CloseStream ran), so closing a closed
stream must be a no-op. The last action of a session is always Done.

Inputs a session did not ask for raise UsageError: that is a bug in the driver.
"""

from __future__ import annotations

import abc
import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import multiaddr

from punch_net.relay.outcomes import Outcome

MAX_MESSAGE = 4096
MAX_ATTEMPTS = 3
MAX_ADDRS = 16
EXCHANGE_TIMEOUT = 10.0  # one CONNECT/CONNECT/SYNC exchange
PUNCH_TIMEOUT = 6.0  # one round of simultaneous dials, upgrade included
REVERSE_TIMEOUT = 3.0  # B's plain dial to A's public addresses before punching
_MAX_VARINT = 10  # bytes in a 64-bit unsigned varint
_MAX_NESTING = 100  # protobuf's recursion limit, which also bounds ours


# ---------------------------------------------------------------- addresses


def tcp_ip_port(addr: str) -> tuple[str, int] | None:
    """(ip, port) of a plain /ip4|ip6/.../tcp/N address; None for anything else."""
    parts = addr.strip("/").split("/")
    if len(parts) < 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp" or "p2p-circuit" in parts:
        return None
    try:
        return parts[1], int(parts[3])
    except ValueError:
        return None


def predict_addrs(observed: list[str], listen: list[str]) -> list[str]:
    """Addresses a peer should punch to: each observed public IP with each listen port.

    The relay observes our *relay connection's* port, but punch dials leave from the
    listen port and port-preserving NATs map that to the same number.
    """
    ips: list[str] = []
    for addr in observed:
        got = tcp_ip_port(addr)
        if got and got[0] not in ips:
            ips.append(got[0])
    ports: list[tuple[int, int]] = []
    for addr in listen:
        got = tcp_ip_port(addr)
        if got:
            fam = 6 if ":" in got[0] else 4
            if (fam, got[1]) not in ports:
                ports.append((fam, got[1]))
    out: list[str] = []
    for ip in ips:
        fam = 6 if ":" in ip else 4
        for pfam, port in ports:
            if pfam == fam:
                out.append(f"/ip{fam}/{ip}/tcp/{port}")
    return out


_PRIVATE_NETS = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10")]


def is_public_ip(text: str) -> bool:
    """Routable beyond a home LAN. Unlike `ipaddress.is_private`, the 198.18.0.0/15
    benchmark range counts as public: the NAT rig uses it as its internet."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return False
    return not any(ip in net for net in _PRIVATE_NETS)


def punchable(addrs: Iterable[str]) -> list[str]:
    """Plain TCP addresses worth a punch: no circuits, no loopback/unspecified, de-duplicated."""
    out: list[str] = []
    for a in addrs:
        got = tcp_ip_port(a)
        if got is None:
            continue
        try:
            ip = ipaddress.ip_address(got[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_unspecified:
            continue
        bare = f"/ip{ip.version}/{got[0]}/tcp/{got[1]}"
        if bare not in out:
            out.append(bare)
    return out[:MAX_ADDRS]


def public_addrs(known: Iterable[str]) -> list[str]:
    """The punchable addresses on a public IP: worth a plain dial before any punch."""
    out = []
    for addr in punchable(known):
        got = tcp_ip_port(addr)
        if got is not None and is_public_ip(got[0]):
            out.append(addr)
    return out


# ---------------------------------------------------------------- wire format


class MessageType(enum.IntEnum):
    CONNECT = 100
    SYNC = 300


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    addrs: tuple[str, ...]  # the ObsAddrs that parse as multiaddrs, in order


class MalformedMessage(ValueError):
    """A frame whose payload is not a HolePunch protobuf."""


class FrameError(ValueError):
    """The length-delimited framing broke: oversized, bad varint, or the stream ended mid-frame."""


def encode_uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT):
        if pos + i >= len(data):
            raise MalformedMessage("truncated varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise MalformedMessage("varint longer than 10 bytes")


def encode_message(kind: MessageType, addrs: Iterable[str]) -> bytes:
    """The HolePunch protobuf (`required Type type = 1; repeated bytes ObsAddrs = 2`),
    byte for byte what protoc's code writes. Addresses that do not parse are left out."""
    out = bytearray(b"\x08" + encode_uvarint(kind))
    for addr in addrs:
        try:
            raw = multiaddr.Multiaddr(addr).to_bytes()
        except Exception:  # multiaddr raises several unrelated types for bad text
            continue
        out += b"\x12" + encode_uvarint(len(raw)) + raw
    return bytes(out)


def _read_key(data: bytes, pos: int) -> tuple[int, int, int]:
    """(field number, wire type, next position) of a field's key."""
    key, pos = _read_uvarint(data, pos)
    if not 0 < key >> 3 < 1 << 29:
        raise MalformedMessage(f"field number {key >> 3}")
    return key >> 3, key & 7, pos


def _skip(data: bytes, pos: int, field: int, wire: int, depth: int = 0) -> int:
    """The position after an unknown field's value (groups included, nested or not)."""
    if wire == 0:
        return _read_uvarint(data, pos)[1]
    if wire == 2:
        size, pos = _read_uvarint(data, pos)
        end = pos + size
    elif wire in (1, 5):
        end = pos + (8 if wire == 1 else 4)
    elif wire == 3:
        if depth >= _MAX_NESTING:
            raise MalformedMessage("groups nested too deep")
        while True:
            inner, inner_wire, pos = _read_key(data, pos)
            if inner_wire == 4:
                if inner != field:
                    raise MalformedMessage("mismatched group end")
                return pos
            pos = _skip(data, pos, inner, inner_wire, depth + 1)
    else:
        raise MalformedMessage(f"unexpected wire type {wire}")
    if end > len(data):
        raise MalformedMessage("truncated field")
    return end


def decode_message(payload: bytes) -> Message:
    """Parse a HolePunch as protobuf's Python parser (which read them before) does: unknown
    fields are skipped, and as it does not enforce proto2's `required`, a missing or unknown
    type reads as the default, CONNECT."""
    kind = MessageType.CONNECT
    raw_addrs: list[bytes] = []
    pos = 0
    while pos < len(payload):
        field, wire, pos = _read_key(payload, pos)
        if field == 1 and wire == 0:
            value, pos = _read_uvarint(payload, pos)
            if value in MessageType._value2member_map_:
                kind = MessageType(value)
        elif field == 2 and wire == 2:
            size, start = _read_uvarint(payload, pos)
            pos = _skip(payload, pos, field, wire)
            raw_addrs.append(payload[start:start + size])
        else:
            pos = _skip(payload, pos, field, wire)
    addrs = []
    for raw in raw_addrs:
        try:
            addrs.append(str(multiaddr.Multiaddr(raw)))
        except Exception:  # one bad address must not cost the others
            continue
    return Message(kind, tuple(addrs))


def frame(payload: bytes) -> bytes:
    """Unsigned-varint length prefix, as libp2p's delimited protobuf streams use."""
    return encode_uvarint(len(payload)) + payload


class FrameReader:
    """Splits received bytes into length-delimited frames, however the bytes were chunked."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._eof = False

    def feed(self, data: bytes) -> None:
        """More bytes; b"" marks the end of the stream."""
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_frame(self) -> bytes | None:
        """The next complete payload, None while more bytes are needed; FrameError if none can come.

        The texts match libp2p's `read_varint_prefixed_bytes_limited`, which read these frames before.
        """
        length = 0
        header = 0
        for i, byte in enumerate(self._buf[:_MAX_VARINT]):
            length |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                header = i + 1
                break
        if not header:
            if len(self._buf) >= _MAX_VARINT:
                raise FrameError("Varint decoding error: integer exceeds maximum size of 64 bits")
            if self._eof:
                raise FrameError("Stream ended while reading varint length prefix")
            return None
        if length > self.limit:  # refuse before buffering the body
            raise FrameError(f"Message length {length} exceeds maximum allowed {self.limit}")
        end = header + length
        if len(self._buf) < end:
            if self._eof:
                raise FrameError(f"Incomplete message: expected {length}, got {len(self._buf) - header}")
            return None
        payload = bytes(self._buf[header:end])
        del self._buf[:end]
        return payload


def classify_error(kind: str, message: str) -> Outcome:
    """The outcome for an exception that ended an exchange, from its type name and text:
    a reset or closed stream means the connection went away, anything else broke the protocol."""
    text = f"{kind} {message}".lower()
    if "reset" in text or "closed" in text or "eof" in text:
        return Outcome.CANCELLED
    return Outcome.PROTOCOL_ERROR


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class Receive:
    """Read what the stream has (b"" at its end) and pass it to receive_data."""


@dataclass(frozen=True, slots=True)
class StartTimer:
    deadline: float  # stream actions after this one must finish by then


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Open a DCUtR stream over the relayed connection, then call stream_opened."""


@dataclass(frozen=True, slots=True)
class CloseStream:
    pass


@dataclass(frozen=True, slots=True)
class CheckConnections:
    """Call connections() with whether the peer has a direct / a relayed connection now."""


@dataclass(frozen=True, slots=True)
class DialBack:
    """A plain dial to the peer's public addresses for up to `timeout` s; answer with dial_result."""

    addrs: tuple[str, ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class Dial:
    """Dial every address at once from the listen port, `delay` s after the actions before
    this one are done, for up to `timeout` s; answer with dial_result.

    A delay rather than a time: B's half round trip counts from when its SYNC is out and
    the stream closed, which only the driver sees (the exception-based version slept so).
    as_responder: B dials but is the security handshake's responder (A is its client)."""

    addrs: tuple[str, ...]
    delay: float
    timeout: float
    as_responder: bool


@dataclass(frozen=True, slots=True)
class Done:
    outcome: Outcome
    error: str
    attempts: int
    remote_addrs: tuple[str, ...]
    direct_addr: str
    rtt_ms: float


Action = Send | Receive | StartTimer | OpenStream | CloseStream | CheckConnections | DialBack | Dial | Done


# ---------------------------------------------------------------- sessions


class State(enum.Enum):
    IDLE = "idle"  # start() not called yet
    CHECKING = "checking"  # asked CheckConnections
    DIALING_BACK = "dialing back"  # asked DialBack
    OPENING = "opening"  # asked OpenStream
    AWAIT_CONNECT = "await connect"
    AWAIT_SYNC = "await sync"
    PUNCHING = "punching"  # asked Dial (the initiator also sent SYNC and CloseStream with it)
    DONE = "done"


# States in which a stream action may be under way (the initiator's SYNC goes out with its Dial).
_TIMED = (State.OPENING, State.AWAIT_CONNECT, State.AWAIT_SYNC, State.PUNCHING)


class UsageError(RuntimeError):
    """An input the session did not ask for in its state: a bug in the driver."""


class _Session(abc.ABC):
    def __init__(self, attempts: int) -> None:
        self.state = State.IDLE
        self.attempts = attempts
        self.remote_addrs: tuple[str, ...] = ()
        self.rtt_ms = 0.0
        self.direct_addr = ""
        self.done: Done | None = None
        self._frames = FrameReader()
        self._deadline = 0.0

    def _expect(self, *states: State) -> None:
        if self.state not in states:
            raise UsageError(f"not expected in state {self.state.value!r}")

    def _done(self, outcome: Outcome, error: str) -> Done:
        self.state = State.DONE
        self.done = Done(outcome, error, self.attempts, self.remote_addrs, self.direct_addr, self.rtt_ms)
        return self.done

    def _finish(self, outcome: Outcome, error: str = "") -> list[Action]:
        return [self._done(outcome, error)]

    def _timer(self, now: float) -> StartTimer:
        self._deadline = now + EXCHANGE_TIMEOUT
        return StartTimer(self._deadline)

    @abc.abstractmethod
    def _fail(self, outcome: Outcome, error: str, *, ends_session: bool = False) -> list[Action]:
        """End the round (the initiator may retry) or, with ends_session, the session."""

    @abc.abstractmethod
    def _on_message(self, msg: Message, now: float) -> list[Action]:
        """Handle one decoded message in an AWAIT_* state."""

    def receive_data(self, data: bytes, now: float) -> list[Action]:
        self._expect(State.AWAIT_CONNECT, State.AWAIT_SYNC)
        self._frames.feed(data)
        actions: list[Action] = []
        # A peer may send more than one message before we answer: handle all that arrived.
        while self.state in (State.AWAIT_CONNECT, State.AWAIT_SYNC):
            try:
                payload = self._frames.next_frame()
            except FrameError as exc:
                return actions + self._fail(Outcome.PROTOCOL_ERROR, str(exc))
            if payload is None:
                return [*actions, Receive()]
            try:
                msg = decode_message(payload)
            except MalformedMessage as exc:
                return actions + self._fail(Outcome.PROTOCOL_ERROR, f"undecodable DCUtR message: {exc}",
                                            ends_session=True)
            actions += self._on_message(msg, now)
        return actions

    def _unexpected(self, msg: Message, want: MessageType) -> list[Action]:
        return self._fail(Outcome.PROTOCOL_ERROR, f"expected DCUtR {want.name}, got type {msg.type.value}",
                          ends_session=True)

    def timer_fired(self, now: float) -> list[Action]:
        if self.state not in _TIMED or now < self._deadline:
            return []  # nothing of the exchange was cut off
        return self._fail(Outcome.TIMEOUT, f"DCUtR exchange took over {EXCHANGE_TIMEOUT:g} s")

    def io_error(self, kind: str, message: str) -> list[Action]:
        if self.state is State.DONE:
            raise UsageError("the session is over")
        # Failing to gather start()'s inputs, look at connections or dial back would fail again.
        ends = self.state in (State.IDLE, State.CHECKING, State.DIALING_BACK)
        return self._fail(classify_error(kind, message), message or kind, ends_session=ends)

    def cancel(self) -> Done:
        return self.done if self.done is not None else self._done(Outcome.CANCELLED, "node stopped")


class Responder(_Session):
    """A's side: answer the peer's CONNECT with our addresses, dial the moment SYNC arrives."""

    def __init__(self, attempt: int) -> None:
        """attempt: which session with this peer since the last success (B retries with new streams)."""
        super().__init__(attempt)
        self._our_addrs: tuple[str, ...] = ()

    def start(self, now: float, our_addrs: Iterable[str]) -> list[Action]:
        self._expect(State.IDLE)
        self._our_addrs = tuple(our_addrs)
        self.state = State.AWAIT_CONNECT
        return [self._timer(now), Receive()]

    def _on_message(self, msg: Message, now: float) -> list[Action]:
        if self.state is State.AWAIT_CONNECT:
            if msg.type is not MessageType.CONNECT:
                return self._unexpected(msg, MessageType.CONNECT)
            self.remote_addrs = tuple(punchable(msg.addrs))
            self.state = State.AWAIT_SYNC
            return [Send(frame(encode_message(MessageType.CONNECT, self._our_addrs)))]
        if msg.type is not MessageType.SYNC:
            return self._unexpected(msg, MessageType.SYNC)
        if not self.remote_addrs:
            return self._finish(Outcome.FAILED, "peer sent no punchable address")
        self.state = State.PUNCHING
        return [Dial(self.remote_addrs, delay=0.0, timeout=PUNCH_TIMEOUT, as_responder=False)]

    def dial_result(self, ok: bool, addr: str = "") -> list[Action]:
        self._expect(State.PUNCHING)
        if not ok:
            return self._finish(Outcome.FAILED, "no direct connection")
        self.direct_addr = addr
        return self._finish(Outcome.SUCCESS)

    def _fail(self, outcome: Outcome, error: str, *, ends_session: bool = False) -> list[Action]:
        return self._finish(outcome, error)  # one stream, one try: B starts any retry


class Initiator(_Session):
    """B's side: a plain dial back first, then up to `max_attempts` rounds of CONNECT,
    CONNECT (timed: the RTT), SYNC and a dial RTT/2 later, each round on a new stream.

    Framing errors, timeouts and stream errors end a round; a message we can decode but
    cannot use ends the session (as the exception-based version did).
    """

    def __init__(self, max_attempts: int = MAX_ATTEMPTS) -> None:
        super().__init__(0)
        self.max_attempts = max_attempts
        self._sent_at = 0.0
        self._stream = False  # a stream of this round may still be open
        self._failure: tuple[Outcome, str] | None = None  # what ended the last round

    def start(self, now: float, *, direct: bool, relayed: bool, known_addrs: Iterable[str]) -> list[Action]:
        self._expect(State.IDLE)
        if direct:
            return self._finish(Outcome.CONNECTION_REVERSED, "peer is already directly connected")
        if not relayed:
            return self._finish(Outcome.NO_CONNECTION, "no relayed connection to the peer")
        public = public_addrs(known_addrs)
        if not public:
            return self._next_round(now, direct=False, relayed=True)
        # Connection reversal first: a public A is simply dialled back.
        self.state = State.DIALING_BACK
        return [DialBack(tuple(public), timeout=REVERSE_TIMEOUT)]

    def connections(self, now: float, *, direct: bool, relayed: bool) -> list[Action]:
        self._expect(State.CHECKING)
        if self._failure is not None:
            outcome, error = self._failure
            if outcome is Outcome.CANCELLED and not relayed:
                outcome = Outcome.NO_CONNECTION  # the relayed connection itself is gone
            if self.attempts >= self.max_attempts:
                return self._finish(outcome, error)
        return self._next_round(now, direct=direct, relayed=relayed)

    def _next_round(self, now: float, *, direct: bool, relayed: bool) -> list[Action]:
        self.attempts += 1
        self._failure = None
        if direct:  # the peer's own dial got through meanwhile
            return self._finish(Outcome.SUCCESS)
        if not relayed:
            return self._finish(Outcome.NO_CONNECTION, "relayed connection closed")
        self.state = State.OPENING
        return [self._timer(now), OpenStream()]

    def stream_opened(self, now: float, our_addrs: Iterable[str]) -> list[Action]:
        """our_addrs: read now, since they may have changed since the last round."""
        self._expect(State.OPENING)
        self.state = State.AWAIT_CONNECT
        self._stream = True
        self._frames = FrameReader()
        self._sent_at = now
        return [self._timer(now), Send(frame(encode_message(MessageType.CONNECT, our_addrs))), Receive()]

    def _on_message(self, msg: Message, now: float) -> list[Action]:
        if msg.type is not MessageType.CONNECT:
            return self._unexpected(msg, MessageType.CONNECT)
        rtt = now - self._sent_at
        self.rtt_ms = round(rtt * 1000, 1)
        self.remote_addrs = tuple(punchable(msg.addrs))
        self.state = State.PUNCHING
        sync: list[Action] = [Send(frame(encode_message(MessageType.SYNC, ()))), CloseStream()]
        if not self.remote_addrs:
            self._stream = False
            return sync + self._finish(Outcome.PROTOCOL_ERROR, "peer sent no punchable address")
        # A dials when SYNC arrives, half a round trip after it leaves: both SYNs cross.
        return [*sync, Dial(self.remote_addrs, delay=rtt / 2, timeout=PUNCH_TIMEOUT, as_responder=True)]

    def dial_result(self, ok: bool, addr: str = "") -> list[Action]:
        self._expect(State.PUNCHING, State.DIALING_BACK)
        if self.state is State.DIALING_BACK:
            if ok:
                return self._finish(Outcome.CONNECTION_REVERSED, "reached the peer by a plain dial")
            self.state = State.CHECKING
            return [CheckConnections()]
        self._stream = False  # the CloseStream before the Dial ran
        if ok:
            self.direct_addr = addr
            return self._finish(Outcome.SUCCESS)
        return self._fail(Outcome.FAILED, "no direct connection")

    def _fail(self, outcome: Outcome, error: str, *, ends_session: bool = False) -> list[Action]:
        actions: list[Action] = [CloseStream()] if self._stream else []
        self._stream = False
        if ends_session:
            return actions + self._finish(outcome, error)
        self._failure = (outcome, error)
        # After the last round only a CANCELLED needs a look: was it the relayed connection?
        if self.attempts < self.max_attempts or outcome is Outcome.CANCELLED:
            self.state = State.CHECKING
            return [*actions, CheckConnections()]
        return actions + self._finish(outcome, error)
