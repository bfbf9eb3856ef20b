"""The control socket's wire form (punch_net/ops/wire.py), without sockets: every API
return type survives JSON with its exact types, arguments are checked against the
NodeAPI signatures, every event kind round-trips."""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing

import pytest
from same_types import assert_same_types

from punch_net import api
from punch_net import events as ev
from punch_net.ops import wire
from punch_net.ops.remote import RemoteNode
from punch_net.relay.outcomes import HolePunchRecord, Outcome
from punch_net.relay.status import HeldReservation, RelayStatus, ServedCircuitInfo, ServedReservationInfo
from punch_net.torrent.info import CatalogueEntry, TransferInfo, TransferPeer

PEER = "12D3KooWQ33oybJiFMsezFu6uHgmbFFa5hHo8qDAKMhfpNtwDPHY"
OTHER = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHy5PdaJdmi3ie5E7sMhT2m"


def relay_status() -> RelayStatus:
    return RelayStatus(
        reachability="private", reachability_checked=1700000000.5, observed_addrs=["/ip4/1.2.3.4/tcp/4001"],
        circuit_addrs=[f"/ip4/5.6.7.8/tcp/4001/p2p/{OTHER}/p2p-circuit"],
        reservations=[HeldReservation(relay=OTHER, relay_addr="/ip4/5.6.7.8/tcp/4001", state="active",
                                      expires=1700003600.0, renewals=2, limit_duration=120, limit_data=1 << 17,
                                      circuit_addrs=["/p2p-circuit"], since=1700000000.0)],
        service_enabled=True, service_limits={"duration": 120, "data": 131072},
        served_reservations=[ServedReservationInfo(peer_id=PEER, ip="9.9.9.9", age_s=3.5, expires_in_s=3596.5,
                                                   renewals=0)],
        served_circuits=[ServedCircuitInfo(src=PEER, dst=OTHER, age_s=1.0, bytes=512, bytes_left=None,
                                           seconds_left=119.0, state="open")],
        service_counters={"reservations": 1, "circuits": 1},
        hole_punches=[HolePunchRecord(peer_id=OTHER, side="initiator", started=1700000001.0,
                                      outcome=Outcome.SUCCESS, attempts=1, ms=231.5,
                                      remote_addrs=["/ip4/5.6.7.8/udp/4001/quic-v1"], direct_addr="/ip4/5.6.7.8",
                                      rtt_ms=40.0),
                      HolePunchRecord(peer_id=PEER, side="responder", outcome=None)],
        outcome_counts={o.value: 0 for o in Outcome} | {"SUCCESS": 1},
        connections_via={"direct": 3, "relay": 1, "hole_punch": 1})


def transfer() -> TransferInfo:
    return TransferInfo(
        info_hash="ab" * 20, name="movie.mkv", size=10_000_000, have=3, total=5, bytes_per_s=1250.5, eta_s=None,
        active_peers=1, state="downloading", direction="download", path="/tmp/movie.mkv", uploaded=0,
        upload_bytes_per_s=0.0,
        peers=(TransferPeer(peer_id=OTHER, down_rate=1250.5, up_rate=300.0, have=4, choked=False, interested=True,
                            state="active", downloaded=3 << 20, pieces=2, bad_pieces=0, outstanding=1, error=""),
               TransferPeer(peer_id=PEER, down_rate=0.0, up_rate=80.0, have=0, choked=True, interested=True)),
        piece_sources=(-2, 0, 0, -1, -1))


def snapshot() -> api.Snapshot:
    return api.Snapshot(
        ts=1700000100.25,
        stats=api.Stats(role="listener", peer_id=PEER, uptime_s=12.5, connections=2, routing_table_size=7,
                        events_dropped=0, messages_in=4, bytes_in=1 << 20),
        listen_addrs=["/ip4/127.0.0.1/tcp/4001"],
        connections=[api.ConnectionInfo(peer_id=OTHER, direction="outbound", remote_addr="/ip4/5.6.7.8/tcp/4001",
                                        transport="direct", security="/noise", muxer="/yamux/1.0.0",
                                        streams=[api.StreamInfo(protocol="/ipfs/kad/1.0.0", direction="outbound")],
                                        rtt_ms=None, since=1700000000.0, agent="punch/0.1", via="hole_punch")],
        routing=api.RoutingTableInfo(size=1, mode="server", last_refresh=None,
                                     buckets=[api.RoutingBucket(cpl=3, peers=[api.RoutingPeer(
                                         peer_id=OTHER, cpl=3, last_seen=1700000000.0, connected=True,
                                         agent="punch/0.1", addrs=["/ip4/5.6.7.8/tcp/4001"])])]),
        relay=relay_status(),
        transfers=[transfer()],
        reputation=[{"peer_id": OTHER, "score": 0.75, "successes": 3.0}],
        capabilities={"cpu": 4, "tags": ["gpu"], "nested": {"x": None}},
        network={"peers": [{"id": OTHER}], "rounds": 2},
        errors=["routing: boom"])


# One realistic return value per API method: the round trip must give it back exactly.
RESULTS: dict[str, object] = {
    "info": api.NodeInfo(peer_id=PEER, role="listener", listen_addrs=["/ip4/127.0.0.1/tcp/4001"], pid=4242,
                         version="0.1.0", components=["relay", "torrent"]),
    "snapshot": snapshot(),
    "dial": OTHER,
    "disconnect": None,
    "find_peers": [api.PeerAddrs(peer_id=OTHER, addrs=["/ip4/5.6.7.8/tcp/4001"])],
    "provide": True,
    "request": api.Reply(id="r1", ok=True, result={"echo": [1, 2.5, "x", None, {"deep": True}]}, rtt_ms=3.25),
    "send_best": api.RouteResult(peer_id=OTHER, result=[1, "two"], attempts=[{"peer_id": PEER, "error": "timeout"}],
                                 candidates=[api.Candidate(peer_id=OTHER, score=0.8, parts={"rtt": 0.9, "load": 0.5},
                                                           known={"rtt": True, "load": False}, rtt_ms=12.0)]),
    "rank": [api.Candidate(peer_id=OTHER, score=0.5, parts={}, known={})],
    "ping": 0.0125,
    "reputation": [{"peer_id": OTHER, "score": 0.5}],
    "relay_status": relay_status(),
    "relay_reserve": relay_status(),
    "relay_release": relay_status(),
    "transfers": [transfer()],
    "torrent_add": transfer(),
    "torrent_pause": None,
    "torrent_resume": None,
    "torrent_cancel": None,
    "torrent_verify": [3, 4],
    "torrent_catalogue": [CatalogueEntry(name="movie.mkv", size=10_000_000, info_hash="ab" * 20, providers=2)],
}


def over_the_wire(name: str, value: object) -> object:
    return wire.structure_result(name, json.loads(json.dumps(wire.unstructure_result(name, value))))


def test_every_api_method_has_a_sample() -> None:
    assert set(RESULTS) == set(api.API_METHODS)


@pytest.mark.parametrize("name", api.API_METHODS)
def test_results_round_trip_with_their_types(name: str) -> None:
    value = RESULTS[name]
    back = over_the_wire(name, value)
    assert back == value
    assert_same_types(value, back, name)


def test_hole_punch_outcome_stays_an_enum() -> None:
    back = over_the_wire("relay_status", relay_status())
    assert isinstance(back, RelayStatus)
    assert back.hole_punches[0].outcome is Outcome.SUCCESS
    assert back.hole_punches[1].outcome is None
    data = wire.unstructure_result("relay_status", relay_status())
    assert isinstance(data, dict) and data["hole_punches"][0]["outcome"] == "SUCCESS"


def test_unknown_result_fields_are_ignored() -> None:
    """A newer node may add fields; an older front still reads what it knows."""
    data = wire.unstructure_result("info", RESULTS["info"])
    assert isinstance(data, dict)
    assert wire.structure_result("info", {**data, "new_field": 1}) == RESULTS["info"]


def test_a_wrong_result_shape_is_refused() -> None:
    with pytest.raises(Exception):  # noqa: B017 - cattrs' own error group; RemoteNode turns it into bad_reply
        wire.structure_result("dial", 5)
    with pytest.raises(Exception):  # noqa: B017
        wire.structure_result("disconnect", {"x": 1})


# ---------------------------------------------------------------- arguments


def test_arguments_are_structured_from_json() -> None:
    assert wire.structure_args("request", {"peer": PEER, "command": "echo", "args": {"x": [1]}, "timeout": 3}) == {
        "peer": PEER, "command": "echo", "args": {"x": [1]}, "timeout": 3.0}
    assert wire.structure_args("snapshot", {}) == {}
    assert wire.structure_args("snapshot", {"parts": ["stats", "relay"]}) == {"parts": ["stats", "relay"]}
    assert wire.structure_args("reputation", {"peer": None}) == {"peer": None}
    assert wire.unstructure_args("find_peers", {"namespace": "ns", "timeout": None}) == {"namespace": "ns",
                                                                                         "timeout": None}


@pytest.mark.parametrize("name,args,says", [
    ("dial", {}, "missing argument 'addr'"),
    ("dial", {"addr": 5}, "'addr' must be string"),
    ("dial", {"addr": True}, "'addr' must be string"),
    ("dial", {"addr": ""}, "non-empty"),
    ("dial", {"addr": "/ip4/1.2.3.4", "port": 1}, "unknown argument 'port'"),
    ("info", {"x": 1}, "takes: no arguments"),
    ("snapshot", {"parts": "stats"}, "'parts' must be a list of string or null"),
    ("snapshot", {"parts": [1]}, "'parts' must be a list"),
    ("request", {"peer": PEER, "command": "c", "args": [1]}, "'args' must be an object or null"),
    ("request", {"peer": PEER, "command": "c", "timeout": "soon"}, "'timeout' must be number or null"),
    ("request", {"peer": PEER, "command": "c", "timeout": 0}, "(0, 300]"),
    ("ping", {"peer": PEER, "timeout": 1e9}, "(0, 300]"),
    ("provide", {"namespace": None}, "'namespace' must be string"),
])
def test_bad_arguments_are_one_line_bad_args(name: str, args: dict[str, object], says: str) -> None:
    with pytest.raises(wire.ControlError) as info:
        wire.structure_args(name, args)
    assert info.value.code == "bad_args"
    assert isinstance(info.value, api.NodeError)
    text = str(info.value)
    assert says in text and "\n" not in text and text.startswith(f"{name}: ")


# ---------------------------------------------------------------- errors


def test_errors_keep_their_class_and_code() -> None:
    for exc in (api.NotRunning("no torrent manager"), api.NoCandidates("nobody in ns"),
                api.CommandFailed("busy", "try later"), api.NodeError("plain failure"),
                wire.ControlError("bad_args", "dial: missing argument 'addr'")):
        code, message = wire.error_to_wire(exc)
        back = wire.error_from_wire(code, message)
        assert type(back) is type(exc) and back.code == exc.code and str(back) == str(exc)
    assert wire.error_to_wire(RuntimeError("first\nsecond")) == ("failed", "first")
    assert wire.error_to_wire(ValueError()) == ("failed", "ValueError")


# ---------------------------------------------------------------- events


def sample(hint: object) -> object:
    """A value of a field's type, for building every event class generically."""
    if hint is typing.Any or hint is object:
        return {"any": [1, "x", None]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in args if a is not type(None)))
    if origin is list:
        return [sample(args[0])]
    if origin is dict:
        return {"k": sample(args[1])}
    return {str: "text", int: 7, float: 2.5, bool: True}[typing.cast(type, hint)]


def all_event_classes() -> list[type[ev.Event]]:
    return sorted(wire.event_classes().values(), key=lambda c: c.kind)


def test_event_table_has_every_kind_once() -> None:
    kinds = [c.kind for c in all_event_classes()]
    assert len(kinds) == len(set(kinds))
    assert {"connected", "hole_punch", "control", "progress", "complete", "peer_bad"} <= set(kinds)


@pytest.mark.parametrize("cls", all_event_classes(), ids=lambda c: c.kind)
def test_every_event_round_trips(cls: type[ev.Event]) -> None:
    hints = typing.get_type_hints(cls)
    event = cls(**{f.name: sample(hints[f.name]) for f in dataclasses.fields(cls)})
    data = wire.encode_event(event)
    assert data["event"] == cls.kind
    assert data == json.loads(json.dumps(event.to_json()))  # the shape `--json` prints
    back = wire.decode_event(json.loads(json.dumps(data)))
    assert back == event
    assert_same_types(event, back, cls.kind)


def test_unknown_event_kinds_are_skipped_and_bad_ones_refused() -> None:
    assert wire.decode_event({"event": "from_the_future", "ts": 1.0, "x": 1}) is None
    assert wire.decode_event({"no": "kind"}) is None
    # a newer node may add fields to a known kind
    assert wire.decode_event({"event": "disconnected", "ts": 1.0, "peer_id": PEER, "reason": "new"}) == \
        ev.PeerDisconnected(ts=1.0, peer_id=PEER)
    with pytest.raises(wire.ControlError) as info:
        wire.decode_event({"event": "disconnected", "ts": 1.0})
    assert info.value.code == "bad_event"


# ---------------------------------------------------------------- the API's shape


def test_api_methods_match_the_protocol() -> None:
    """API_METHODS lists every request/response method of NodeAPI (all but the event stream)."""
    declared = wire.protocol_methods()
    assert [m for m in declared if m != "events"] == list(api.API_METHODS)
    for name in api.API_METHODS:
        assert inspect.iscoroutinefunction(getattr(api.NodeAPI, name)), name
        wire.return_type(name)  # every annotation resolves


def test_remote_node_has_every_api_method_with_the_same_signature() -> None:
    for name in [*api.API_METHODS, "events"]:
        mine = getattr(RemoteNode, name)
        assert inspect.signature(mine, eval_str=True) == inspect.signature(getattr(api.NodeAPI, name),
                                                                      eval_str=True), name
        if name in api.API_METHODS:
            assert inspect.iscoroutinefunction(mine), name


# ---------------------------------------------------------------- DHT diagnostics and health


def provider_lookup(trace: bool) -> api.ProviderLookup:
    if not trace:
        return api.ProviderLookup(providers=[OTHER, PEER], ms=12.5, hops=2, queries=5)
    steps = [api.LookupStep(peer=OTHER[-8:], connected=True, at_ms=0.0, open_ms=0.5, rpc_ms=1.25, total_ms=1.75,
                            providers=1, closer=3),
             api.LookupStep(peer=PEER[-8:], connected=False, at_ms=0.1, open_ms=1000.0, rpc_ms=None,
                            total_ms=1000.0, error="TooSlowError")]
    return api.ProviderLookup(providers=[OTHER], ms=1001.5, hops=None, queries=2, steps=steps, lag_max_ms=3.5,
                              lag_total_ms=7.0)


def health() -> api.Health:
    return api.Health(peer_id=PEER, role="server", pid=4242, rss_bytes=57 << 20, uptime_s=12.5, connections=3,
                      routing_table_size=19, bootstrapped=True,
                      connmgr=api.ConnManagerStats(low=32, high=48, grace_s=5.0, pruned=2, last_trim=None),
                      dial_errors=1)


# The new methods' samples join RESULTS, so the round-trip test above covers them too.
RESULTS.update({
    "dht_provide": api.DHTProvideResult(ok=True, ms=38.5),
    "dht_find_providers": provider_lookup(trace=True),
    "dht_refresh": api.RefreshResult(before=18, after=19, evicted_clients=0, lookups=3, ms=120.5, reprovided=4),
    "health": health(),
})


@pytest.mark.parametrize("trace", [False, True])
def test_provider_lookup_round_trips_with_and_without_trace(trace: bool) -> None:
    value = provider_lookup(trace)
    back = over_the_wire("dht_find_providers", value)
    assert back == value
    assert_same_types(value, back, "dht_find_providers")
    data = wire.unstructure_result("dht_find_providers", value)
    assert isinstance(data, dict) and isinstance(data["providers"], list)
    assert (data["steps"] is None) is (not trace)


def test_health_keeps_whole_numbers_and_a_missing_trim() -> None:
    data = wire.unstructure_result("health", health())
    assert isinstance(data, dict) and data["rss_bytes"] == 57 << 20 and data["connmgr"]["last_trim"] is None
    trimmed = dataclasses.replace(health(), connmgr=api.ConnManagerStats(low=1, high=2, grace_s=1.0, pruned=0,
                                                                        last_trim=1700000000.5))
    back = over_the_wire("health", trimmed)
    assert isinstance(back, api.Health) and back.connmgr.last_trim == 1700000000.5


def test_dht_arguments_are_structured_from_json() -> None:
    assert wire.structure_args("dht_find_providers", {"key": "k", "count": 1, "timeout": 2, "trace": True}) == {
        "key": "k", "count": 1, "timeout": 2.0, "trace": True}
    assert wire.structure_args("dht_provide", {"key": "k"}) == {"key": "k"}
    assert wire.structure_args("dht_refresh", {}) == {}
    assert wire.structure_args("health", {}) == {}


@pytest.mark.parametrize("name,args,says", [
    ("dht_provide", {}, "missing argument 'key'"),
    ("dht_provide", {"key": ""}, "non-empty"),
    ("dht_find_providers", {"key": "k", "count": 2.5}, "'count' must be integer"),
    ("dht_find_providers", {"key": "k", "count": True}, "'count' must be integer"),
    ("dht_find_providers", {"key": "k", "trace": 1}, "'trace' must be boolean"),
    ("dht_find_providers", {"key": "k", "timeout": 0}, "(0, 300]"),
    ("health", {"verbose": True}, "takes: no arguments"),
])
def test_bad_dht_arguments_are_one_line_bad_args(name: str, args: dict[str, object], says: str) -> None:
    with pytest.raises(wire.ControlError) as info:
        wire.structure_args(name, args)
    assert info.value.code == "bad_args"
    assert says in str(info.value) and str(info.value).startswith(f"{name}: ")
