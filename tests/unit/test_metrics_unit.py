"""NodeMetrics without a network: hooks, scrape-time collection, torrent sync."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from punch_net.api import Snapshot, Stats
from punch_net.events import EventBus, HolePunch, Reply
from punch_net.ops.metrics import NodeMetrics
from punch_net.routing.reputation import ReputationStore


@dataclass
class Peer:
    downloaded: int
    pieces: int
    bad_pieces: int = 0


@dataclass
class Transfer:
    info_hash: str
    uploaded: int
    peers: list[Peer] = field(default_factory=list)


class FakeSource:
    """The snapshot a LocalNode would give, built by hand: counters, a reputation store's
    rows, and the transfers' rows (which the test changes between scrapes)."""

    def __init__(self, store: ReputationStore, transfers: list[Transfer] | None) -> None:
        self.store = store
        self.transfers = transfers
        self.bus = EventBus()

    def take_snapshot(self, parts: list[str] | None = None) -> Snapshot:
        stats = Stats(role="listener", peer_id="me", uptime_s=1.0, connections=0, routing_table_size=0,
                      events_dropped=0, messages_in=4, dial_errors=2, bytes_in=1000, bytes_out=2000)
        rows: Any = self.transfers
        return Snapshot(ts=0.0, stats=stats, transfers=rows, reputation=self.store.snapshot())

    def events(self, replay: bool = True) -> Any:
        raise AssertionError("not used without a running node")


def fake_metrics(transfers: list[Transfer] | None = None) -> tuple[NodeMetrics, ReputationStore]:
    """NodeMetrics over a hand-made snapshot source (no relay part: no relay series)."""
    store = ReputationStore()
    return NodeMetrics("listener", FakeSource(store, transfers)), store


def samples(m: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_hooks_and_events() -> None:
    m, store = fake_metrics()
    m.dht_lookup("find_providers", 0.2, True)
    m.dht_lookup("find_providers", 3.0, False)
    m.on_event(HolePunch(peer_id="p", outcome="SUCCESS", attempts=1, ms=12.0))
    m.on_event(Reply(peer_id="p", id="1", ok=True, rtt_ms=4.0))
    store.on_record = m.reputation_event
    store.record_bad_data("p")
    s = samples(m)
    assert s[("punch_messages_total", (("direction", "in"),))] == 4
    assert s[("punch_transport_bytes_total", (("direction", "in"),))] == 1000
    assert s[("punch_transport_bytes_total", (("direction", "out"),))] == 2000
    assert s[("libp2p_swarm_dial_errors_total", (("error", "other"), ("transport", "tcp")))] == 2
    assert s[("punch_dht_lookups_total", (("op", "find_providers"), ("result", "fail")))] == 1
    assert s[("punch_dht_lookup_duration_seconds_count", (("op", "find_providers"),))] == 2
    assert s[("libp2p_holepunch_outcomes_total", (("num_attempts", "1"), ("outcome", "success"),
                                                  ("side", "initiator")))] == 1
    assert s[("punch_request_duration_seconds_bucket", (("le", "0.005"), ("status", "ok")))] == 1
    assert s[("punch_reputation_events_total", (("kind", "bad_data"),))] == 1
    assert s[("punch_reputation_peers", ())] == 1


def test_torrent_series_follow_transfers_monotonically() -> None:
    rows = [Transfer("aa", uploaded=100, peers=[Peer(1000, 2), Peer(500, 1, bad_pieces=1)])]
    m, _ = fake_metrics(rows)
    s = samples(m)
    assert s[("punch_torrent_bytes_total", (("direction", "down"),))] == 1500
    assert s[("punch_torrent_bytes_total", (("direction", "up"),))] == 100
    assert s[("punch_torrent_pieces_total", (("result", "verified"),))] == 3
    assert s[("punch_torrent_pieces_total", (("result", "corrupt"),))] == 1
    rows[0].peers[0].downloaded = 3000
    rows.append(Transfer("bb", uploaded=7))
    s = samples(m)
    assert s[("punch_torrent_bytes_total", (("direction", "down"),))] == 3500
    assert s[("punch_torrent_bytes_total", (("direction", "up"),))] == 107
    rows.clear()  # finished transfers leave: the counters never go down
    assert samples(m)[("punch_torrent_bytes_total", (("direction", "down"),))] == 3500
