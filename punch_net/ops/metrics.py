"""Prometheus metrics for every role (`--metrics-port`, off by default), at `/metrics`.

Names follow go-libp2p where a go-libp2p metric exists, so its Grafana dashboards work:
`libp2p_swarm_connections_opened_total{dir,transport,security,muxer}`,
`libp2p_swarm_connections_closed_total{...}`, `libp2p_swarm_connection_duration_seconds`,
`libp2p_swarm_dial_errors_total`, `libp2p_holepunch_outcomes_total{side,num_attempts,outcome}`,
`libp2p_relaysvc_*`. Ours are `punch_*` (messages, request latency, DHT lookups, torrent
bytes and pieces, reputation). See docs/OPERATIONS.md for the full list.

Each node has its own `CollectorRegistry` (several nodes in one process never collide).
What the node already counts is read at scrape time from the NodeAPI's typed snapshot
(stats, connections, relay, reputation, transfers: `LocalNode.take_snapshot`), events
from its event stream; connections (with their labels and lifetimes) and DHT lookup
timings come in through the kernel's observers (`Node.observe_connections`,
`observe_lookups`). The composition root (punch_net/runtime.py) wires it.

The HTTP endpoint is served by trio itself (no thread), so scrapes read node state on the
node's own thread and never race it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import trio
from libp2p.abc import IHost
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from trio_typing import TaskStatus

from punch_net import __version__
from punch_net import events as ev
from punch_net.api import JSONObject, Snapshot, Stats
from punch_net.errors import NodeError
from punch_net.reach.summary import REACHABLE_AS
from punch_net.relay.status import RelayStatus

disable_created_metrics()  # go-libp2p exports no *_created series; dashboards do not expect them

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
REQUEST_LIMIT = 8192  # bytes of HTTP request head we accept
REQUEST_TIMEOUT = 5.0
MAX_CLIENTS = 16
MAX_LABELLED_PEERS = 64  # per-peer reputation gauges only for connected peers, at most this many


def _security_label(proto: str) -> str:
    p = proto.strip("/").split("/")[0].lower() if proto else ""
    return {"noise": "noise", "tls": "tls", "plaintext": "plaintext"}.get(p, p or "unknown")


def conn_labels(conn: Any) -> dict[str, str]:
    """go-libp2p's connection labels for a py-libp2p SwarmConn."""
    direction = str(getattr(conn, "direction", "")).lower().split(".")[-1]
    try:
        addrs = conn.get_transport_addresses()
        remote = str(addrs[0]) if addrs else ""
    except Exception:
        remote = ""
    try:
        security = str(conn.get_negotiated_security_protocol() or "")
        muxer = str(conn.get_negotiated_muxer_protocol() or "")
    except Exception:
        security, muxer = "", ""
    return {
        "dir": direction if direction in ("inbound", "outbound") else "unknown",
        "transport": "circuit-relay" if "p2p-circuit" in remote else ("tcp" if "/tcp/" in remote or not remote
                                                                       else remote.split("/")[3:4][0]),
        "security": _security_label(security),
        "muxer": muxer or "unknown",
    }


class SnapshotSource(Protocol):
    """What metrics read: the NodeAPI's snapshot (synchronously: a scrape cannot await) and
    its event stream. The in-process `LocalNode` (punch_net/runtime.py) is one."""

    def take_snapshot(self, parts: list[str] | None = None) -> Snapshot: ...

    def events(self, replay: bool = True) -> AbstractAsyncContextManager[AsyncIterator[ev.Event]]: ...


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class NodeMetrics:
    """All of one node's metrics and the hooks that feed them."""

    def __init__(self, role: str, source: SnapshotSource) -> None:
        self.source = source
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ["dir", "transport", "security", "muxer"]
        self.conns_opened = Counter("libp2p_swarm_connections_opened", "Connections opened", labels, registry=r)
        self.conns_closed = Counter("libp2p_swarm_connections_closed", "Connections closed", labels, registry=r)
        self.conn_duration = Histogram("libp2p_swarm_connection_duration_seconds", "Connection lifetimes",
                                       labels, buckets=DURATION_BUCKETS, registry=r)
        self.holepunch = Counter("libp2p_holepunch_outcomes", "Hole-punch (DCUtR) sessions by outcome",
                                 ["side", "num_attempts", "outcome"], registry=r)
        self.request_latency = Histogram("punch_request_duration_seconds",
                                         "Round trip of JSON commands we sent, by reply status", ["status"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.dht_lookups = Counter("punch_dht_lookups", "DHT operations", ["op", "result"], registry=r)
        self.dht_latency = Histogram("punch_dht_lookup_duration_seconds", "DHT operation latency", ["op"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.torrent_bytes_c = Counter("punch_torrent_bytes", "Torrent payload bytes", ["direction"], registry=r)
        self.torrent_pieces_c = Counter("punch_torrent_pieces", "Torrent pieces by result", ["result"], registry=r)
        self.reputation_events = Counter("punch_reputation_events", "Reputation observations", ["kind"],
                                         registry=r)
        self.routed = Counter("punch_routed_requests", "Weighted-routing sends by result", ["result"], registry=r)
        self.crawls = Counter("punch_monitor_crawls", "Monitor crawl rounds finished", registry=r)
        self.info = Gauge("punch_build_info", "Punch version and role", ["version", "role"], registry=r)
        self.info.labels(__version__, role).set(1)
        for direction in ("down", "up"):
            self.torrent_bytes_c.labels(direction)
        for result in ("verified", "corrupt"):
            self.torrent_pieces_c.labels(result)
        for kind in ("success", "failure", "timeout", "bad_data"):
            self.reputation_events.labels(kind)
        r.register(_NodeCollector(source))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._opened_at: dict[int, tuple[float, dict[str, str]]] = {}
        self._transfer_seen: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------ hooks (call from anywhere)

    def connection_opened(self, conn: Any) -> None:
        labels = conn_labels(conn)
        self.conns_opened.labels(**labels).inc()
        self._opened_at[id(conn)] = (time.monotonic(), labels)

    def connection_closed(self, conn: Any) -> None:
        opened = self._opened_at.pop(id(conn), None)
        labels = opened[1] if opened else conn_labels(conn)
        self.conns_closed.labels(**labels).inc()
        if opened:
            self.conn_duration.labels(**labels).observe(time.monotonic() - opened[0])

    def dht_lookup(self, op: str, seconds: float, ok: bool) -> None:
        self.dht_lookups.labels(op, "ok" if ok else "fail").inc()
        self.dht_latency.labels(op).observe(max(0.0, seconds))

    def reputation_event(self, peer: str, kind: str) -> None:
        self.reputation_events.labels(kind).inc()

    def on_event(self, event: ev.Event) -> None:
        """Feed from the node's event bus (hole punches, replies, routed sends)."""
        if isinstance(event, ev.HolePunch):
            self.holepunch.labels(event.side, str(event.attempts), event.outcome.lower()).inc()
        elif isinstance(event, ev.Reply):
            self.request_latency.labels("ok" if event.ok else "error").observe(event.rtt_ms / 1000.0)
        elif isinstance(event, ev.Routed):
            self.routed.labels("ok" if event.ok else "failed").inc()
        elif isinstance(event, ev.CrawlFinished):
            self.crawls.inc()

    def sync_transfers(self) -> None:
        """Fill the torrent series from the transfers' rows (TransferInfo): per transfer, the
        growth of bytes received from peers, bytes served, pieces received and pieces that
        failed their hash."""
        rows = self.source.take_snapshot(["transfers"]).transfers or []
        for t in rows:
            figures = {("bytes", "down"): sum(p.downloaded for p in t.peers),
                       ("bytes", "up"): t.uploaded,
                       ("pieces", "verified"): sum(p.pieces for p in t.peers),
                       ("pieces", "corrupt"): sum(p.bad_pieces for p in t.peers)}
            for (kind, label), value in figures.items():
                last = self._transfer_seen.get((t.info_hash, f"{kind}:{label}"), 0)
                if value > last:
                    counter = self.torrent_bytes_c if kind == "bytes" else self.torrent_pieces_c
                    counter.labels(label).inc(value - last)
                    self._transfer_seen[(t.info_hash, f"{kind}:{label}")] = value

    def render(self) -> bytes:
        self.sync_transfers()
        return generate_latest(self.registry)

    # ------------------------------------------------------------ wiring

    def attach(self, host: IHost, dht: object) -> None:
        pass  # connections come through Node.observe_connections, lookups through observe_lookups

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.source.events(replay=False) as events:
            task_status.started()
            async for event in events:
                self.on_event(event)


class _NodeCollector(Collector):
    """Reads the node's typed snapshot (the NodeAPI's), at scrape time."""

    def __init__(self, source: SnapshotSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        snap = self.source.take_snapshot(["stats", "connections", "relay", "reputation"])
        c = snap.stats or Stats(role="", peer_id="", uptime_s=0.0, connections=0, routing_table_size=0,
                                events_dropped=0)
        traffic = CounterMetricFamily("punch_transport_bytes", "Bytes on the wire after each Noise handshake",
                                      labels=["direction"])
        traffic.add_metric(["in"], c.bytes_in)
        traffic.add_metric(["out"], c.bytes_out)
        yield traffic
        msgs = CounterMetricFamily("punch_messages", "JSON command messages", labels=["direction"])
        msgs.add_metric(["in"], c.messages_in)
        msgs.add_metric(["out"], c.messages_out)
        yield msgs
        yield CounterMetricFamily("punch_replies", "Replies received to our commands", value=c.replies)
        yield CounterMetricFamily("punch_request_errors", "Commands that got no reply", value=c.errors)
        yield CounterMetricFamily("punch_messages_rejected", "Malformed or oversized messages refused",
                                  value=c.rejected)
        dial = CounterMetricFamily("libp2p_swarm_dial_errors", "Failed dials", labels=["transport", "error"])
        dial.add_metric(["tcp", "other"], c.dial_errors)
        yield dial
        yield CounterMetricFamily("punch_events_dropped", "Events dropped for slow subscribers",
                                  value=c.events_dropped)
        peers: list[str] = []
        if snap.stats is not None:
            peers = sorted({conn.peer_id for conn in snap.connections})
            yield GaugeMetricFamily("punch_connected_peers", "Peers with at least one connection",
                                    value=len(peers))
            yield GaugeMetricFamily("punch_connections", "Open connections", value=len(snap.connections))
            yield GaugeMetricFamily("punch_dht_routing_table_size", "Peers in the Kademlia routing table",
                                    value=c.routing_table_size)
        yield from self._reputation(snap.reputation or [], peers)
        if snap.relay is not None:
            yield from self._relay(snap.relay)

    def _reputation(self, rows: list[JSONObject], peers: list[str]) -> Iterator[Any]:
        scores = {str(row.get("peer_id")): _number(row.get("score")) for row in rows}
        yield GaugeMetricFamily("punch_reputation_peers", "Peers with a reputation record", value=len(scores))
        bounds = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
        buckets = [(f"{b:g}", sum(1 for s in scores.values() if s <= b + 1e-12)) for b in bounds]
        buckets.append(("+Inf", len(scores)))
        yield GaugeHistogramMetricFamily("punch_reputation_score_distribution",
                                         "Reputation scores of all known peers", buckets=buckets,
                                         gsum_value=sum(scores.values()))
        per_peer = GaugeMetricFamily("punch_reputation_score", "Reputation of connected peers (0..1)",
                                     labels=["peer_id"])
        for peer in peers[:MAX_LABELLED_PEERS]:
            if peer in scores:
                per_peer.add_metric([peer], scores[peer])
        yield per_peer

    def _relay(self, status: RelayStatus) -> Iterator[Any]:
        yield GaugeMetricFamily("libp2p_relaysvc_status", "Relay service active (1) or not (0)",
                                value=1 if status.service_enabled else 0)
        sc = status.service_counters or {}
        res = CounterMetricFamily("libp2p_relaysvc_reservations", "Relay reservations", labels=["type"])
        res.add_metric(["opened"], sc.get("reservations_accepted", 0))
        res.add_metric(["renewed"], sc.get("reservations_renewed", 0))
        yield res
        rej = CounterMetricFamily("libp2p_relaysvc_reservation_rejections", "Refused reservations",
                                  labels=["reason"])
        rej.add_metric(["limit"], sc.get("reservations_refused", 0))
        yield rej
        con = CounterMetricFamily("libp2p_relaysvc_connections", "Relayed connections", labels=["type"])
        con.add_metric(["opened"], sc.get("circuits_opened", 0))
        yield con
        crej = CounterMetricFamily("libp2p_relaysvc_connection_rejections", "Refused relayed connections",
                                   labels=["reason"])
        crej.add_metric(["limit"], sc.get("circuits_refused", 0))
        yield crej
        yield GaugeMetricFamily("punch_relay_reservations_served", "Reservations we hold for others",
                                value=len(status.served_reservations))
        yield GaugeMetricFamily("punch_relay_circuits_active", "Circuits we relay right now",
                                value=len(status.served_circuits))
        yield GaugeMetricFamily("punch_relay_reservations_held", "Reservations we hold on relays",
                                value=len(status.reservations))
        yield _reachability(status.reachability)
        how = GaugeMetricFamily("punch_reachable_as", "1 for how others reach us now "
                                "(announced/port-mapped/public/relayed only/unknown)", labels=["how"])
        for kind in REACHABLE_AS:
            how.add_metric([kind], 1 if status.reachable_as == kind else 0)
        yield how


def _reachability(value: str) -> GaugeMetricFamily:
    g = GaugeMetricFamily("punch_reachability", "1 for our current reachability (unknown/public/private)",
                          labels=["status"])
    for status in ("unknown", "public", "private"):
        g.add_metric([status], 1 if value == status else 0)
    return g


# ---------------------------------------------------------------- HTTP endpoint (trio)


def _response(status: str, body: bytes, ctype: str, head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    return head if head_only else head + body


def handle_http(request_head: bytes, metrics: NodeMetrics) -> bytes:
    """Answer one HTTP request (pure except for rendering the registry)."""
    try:
        line = request_head.split(b"\r\n", 1)[0].decode("latin-1")
        method, target, _version = line.split(" ", 2)
    except ValueError:
        return _response("400 Bad Request", b"bad request\n", "text/plain")
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"GET only\n", "text/plain")
    path = target.split("?", 1)[0]
    if path == "/metrics":
        return _response("200 OK", metrics.render(), CONTENT_TYPE_LATEST, method == "HEAD")
    if path == "/":
        body = b'<html><body><a href="/metrics">/metrics</a></body></html>\n'
        return _response("200 OK", body, "text/html", method == "HEAD")
    return _response("404 Not Found", b"not found\n", "text/plain", method == "HEAD")


async def _serve_one(stream: trio.SocketStream, metrics: NodeMetrics) -> None:
    async with stream:
        head = b""
        with trio.move_on_after(REQUEST_TIMEOUT):
            while b"\r\n\r\n" not in head and len(head) < REQUEST_LIMIT:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
        if b"\r\n\r\n" not in head:
            return
        with trio.move_on_after(REQUEST_TIMEOUT):
            try:
                await stream.send_all(handle_http(head, metrics))
            except trio.BrokenResourceError:
                pass


async def serve_metrics(metrics: NodeMetrics, publish: Callable[[ev.Event], None], host: str, port: int, *,
                        task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on host:port and answer scrapes until cancelled."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise NodeError(f"metrics: cannot listen on {host}:{port}: {exc.strerror}") from None
    limiter = trio.CapacityLimiter(MAX_CLIENTS)
    bound = listeners[0].socket.getsockname()
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}/metrics"
    publish(ev.MetricsServing(url=url))
    task_status.started(url)

    async def handler(stream: trio.SocketStream) -> None:
        async with limiter:
            await _serve_one(stream, metrics)

    await trio.serve_listeners(handler, listeners)
