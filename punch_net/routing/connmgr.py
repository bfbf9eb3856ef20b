"""Connection manager: keep a node's connection count between watermarks.

Without it a Kademlia node drifts towards a full mesh: every lookup dials new peers and
nothing closes them, and py-libp2p's auto-connector dials peerstore entries until it
holds (low + high) / 2 connections. When the count goes above `high`, we close the
least useful unprotected connections until `low` remain.

Least useful, in order: lowest tag value (DHT routing-table peers are tagged), then
idle before busy, then oldest. Never pruned: connections younger than `grace`, peers
protected by anyone (`protect(peer, tag)`: bootstrap peers, the DHT neighbours closest
to us, transfers), and peers with an open stream of a long-lived protocol (command
sessions, torrent transfers). Tags and protections live in py-libp2p's TagStore so its
own safety-net pruner respects them too.

The selection (`select_prune`) is a pure function; `ConnManager` is the trio adapter.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.node import Node

DEFAULT_LOW = 32
DEFAULT_HIGH = 48
DEFAULT_GRACE = 5.0
# Above high + (high - low) / 2 connections, connections younger than `grace` may go too,
# if no stream is open on them and they are at least MIN_AGE old: a burst of one-shot dials
# (a provide's 20 ADD_PROVIDER messages, a lookup) would otherwise overshoot for `grace` s.
MIN_AGE = 1.0
SWEEP_INTERVAL = 60.0  # a pass even when nothing asked for one (a safety net, not the trigger)
NEIGHBOURS = 8  # routing-table peers closest to us: always kept (DHT neighbours)
DHT_TAG_VALUE = 10
# Streams of these protocols are short request/response exchanges: they do not make a
# connection "busy". Any other open stream (commands, transfers) protects it.
# Relay streams are not short: a hop stream carries a whole relayed connection.
SHORT_PROTOCOLS = ("/ipfs/kad/", "/ipfs/id/", "/ipfs/ping/", "/libp2p/autonat/")
TAG_DHT = "dht"
PROTECT_BOOTSTRAP = "bootstrap"
PROTECT_NEIGHBOUR = "dht-neighbour"


@dataclass(frozen=True)
class ConnSnapshot:
    """What the pruning policy needs to know about one peer's connections."""

    peer: Any
    age: float  # seconds since we first saw the connection
    busy: bool  # an open long-lived stream (command session, transfer)
    value: int  # sum of tag values
    protected: bool
    streams: int = 1  # streams open on the peer's connections (unknown: assume one)


def ceiling_of(low: int, high: int) -> int:
    """Connection count above which young connections with no open stream are pruned too."""
    return high + max(high - low, 0) // 2


def select_prune(conns: list[ConnSnapshot], low: int, high: int, grace: float,
                 min_age: float = MIN_AGE) -> list[Any]:
    """Peers to disconnect so that at most `low` remain, or [] while at most `high` are open.

    Only unprotected, idle connections older than `grace` are candidates; the least
    valuable and oldest go first. While that still leaves more than `ceiling_of(low, high)`,
    unprotected connections younger than `grace` but at least `min_age` old with no open
    stream go as well, down to that ceiling (nothing is in flight on them). May return
    fewer than needed if too many are protected.
    """
    if len(conns) <= high:
        return []
    want = len(conns) - max(low, 0)
    candidates = [c for c in conns if not c.protected and not c.busy and c.age >= grace]
    candidates.sort(key=lambda c: (c.value, -c.age))
    victims = [c.peer for c in candidates[:want]]
    over = len(conns) - len(victims) - ceiling_of(low, high)
    if over > 0:
        young = [c for c in conns if not c.protected and not c.busy and min_age <= c.age < grace and c.streams == 0]
        young.sort(key=lambda c: (c.value, -c.age))
        victims += [c.peer for c in young[:over]]
    return victims


def _xor_distance(a: ID, b: ID) -> int:
    ka = int.from_bytes(hashlib.sha256(a.to_bytes()).digest(), "big")
    kb = int.from_bytes(hashlib.sha256(b.to_bytes()).digest(), "big")
    return ka ^ kb


class _LocalTags:
    """Fallback tag store with py-libp2p TagStore's method names (used if the swarm has none)."""

    def __init__(self) -> None:
        self._tags: dict[ID, dict[str, int]] = {}
        self._protected: dict[ID, set[str]] = {}

    def tag_peer(self, peer_id: ID, tag: str, value: int) -> None:
        self._tags.setdefault(peer_id, {})[tag] = value

    def untag_peer(self, peer_id: ID, tag: str) -> None:
        self._tags.get(peer_id, {}).pop(tag, None)

    def get_tag_value(self, peer_id: ID) -> int:
        return sum(self._tags.get(peer_id, {}).values())

    def protect(self, peer_id: ID, tag: str) -> None:
        self._protected.setdefault(peer_id, set()).add(tag)

    def unprotect(self, peer_id: ID, tag: str) -> bool:
        tags = self._protected.get(peer_id, set())
        tags.discard(tag)
        if not tags:
            self._protected.pop(peer_id, None)
            return False
        return True

    def is_protected(self, peer_id: ID, tag: str = "") -> bool:
        tags = self._protected.get(peer_id, set())
        return tag in tags if tag else bool(tags)


class ConnManager:
    """Watermark pruning for one node. Other components call `protect`/`unprotect` and
    `tag_peer`/`untag_peer` to say which peers matter to them."""

    def __init__(self, node: Node, low: int = DEFAULT_LOW, high: int = DEFAULT_HIGH,
                 grace: float = DEFAULT_GRACE) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"connection watermarks need 0 <= low <= high (got {low}, {high})")
        self.node = node
        self.low, self.high, self.grace = low, high, grace
        self.pruned = 0
        self.last_trim: float | None = None
        self._first_seen: dict[ID, float] = {}
        self._tags: Any = _LocalTags()
        self._wake = trio.Event()
        self._dht_tagged: set[ID] = set()

    # ------------------------------------------------------------------ API for others

    def attach(self, host: IHost, dht: object) -> None:
        """Share py-libp2p's TagStore and turn its own policies into a safety net only.

        Its auto-connector would dial peerstore entries up to (low+high)/2 connections
        (see punch_net/p2p/patches/auto_connector.py); its pruner only acts above 2×high.
        """
        swarm = host.get_network()
        store = getattr(swarm, "tag_store", None)
        if store is not None:
            self._tags = store
        cfg = getattr(swarm, "connection_config", None)
        if cfg is not None:
            cfg.high_watermark = max(self.high * 2, self.high + 16)
            cfg.low_watermark = self.low
            cfg.min_connections = 0

    def protect(self, peer: ID | str, tag: str) -> None:
        self._tags.protect(_id(peer), tag)

    def unprotect(self, peer: ID | str, tag: str) -> bool:
        """Remove one protection; True if the peer is still protected by another tag."""
        return bool(self._tags.unprotect(_id(peer), tag))

    def is_protected(self, peer: ID | str, tag: str = "") -> bool:
        return bool(self._tags.is_protected(_id(peer), tag))

    def tag_peer(self, peer: ID | str, tag: str, value: int) -> None:
        self._tags.tag_peer(_id(peer), tag, value)

    def untag_peer(self, peer: ID | str, tag: str) -> None:
        self._tags.untag_peer(_id(peer), tag)

    def trigger(self) -> None:
        """Ask for a trim pass now (e.g. after a burst of dials)."""
        self._wake.set()

    def connection_opened(self, conn: object) -> None:
        """The node calls this on every new connection: wake up only above `high`."""
        if self._count() > self.high:
            self._wake.set()

    def connection_closed(self, conn: object) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "grace_s": self.grace, "pruned": self.pruned,
                "last_trim": self.last_trim}

    # ------------------------------------------------------------------ the loop

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Trim when a new connection takes the count above `high`, and every
        SWEEP_INTERVAL seconds as a safety net, until cancelled.

        Event-driven (the node calls `connection_opened`), not polled: an idle node must
        not wake up every second (at 200 nodes on 2 cores, idle wake-ups add up to whole
        cores). While the count stays above `high` (connections younger than `grace`, or
        all protected/busy) we look again every grace/2 seconds.
        """
        timeout = SWEEP_INTERVAL
        task_status.started()
        while True:
            with trio.move_on_after(timeout):
                await self._wake.wait()
            self._wake = trio.Event()
            timeout = SWEEP_INTERVAL
            try:
                await self.trim()
                count = self._count()
                if count > ceiling_of(self.low, self.high):
                    timeout = MIN_AGE / 2  # a burst: young idle connections become prunable soon
                elif count > self.high:
                    timeout = self.grace / 2 + 0.1  # over high but all too young, or a retry
            except trio.Cancelled:
                raise
            except Exception as exc:  # a bug here must not take the node down

                self.node.bus.publish(ev.ErrorEvent(message=f"connection manager: {exc}", where="connmgr"))

    def _count(self) -> int:
        try:
            return len(self.node.host.get_network().get_connections_map())
        except Exception:
            return 0

    def snapshot(self, now: float | None = None) -> list[ConnSnapshot]:
        node = self.node
        now = time.monotonic() if now is None else now
        conns = node.host.get_network().get_connections_map()
        for gone in [p for p in self._first_seen if p not in conns]:
            del self._first_seen[gone]
        self._refresh_dht_tags()
        out: list[ConnSnapshot] = []
        for peer, peer_conns in conns.items():
            first = self._first_seen.setdefault(peer, now)
            busy = node.has_session(peer)
            streams = 0
            for conn in peer_conns:
                for stream in conn.get_streams():
                    streams += 1
                    proto = str(stream.get_protocol() or "")
                    if proto and not proto.startswith(SHORT_PROTOCOLS):
                        busy = True
            protected = self._tags.is_protected(peer) or peer in node.bootstrap_peers
            out.append(ConnSnapshot(peer, now - first, busy, int(self._tags.get_tag_value(peer)), protected,
                                    streams))
        return out

    def _refresh_dht_tags(self) -> None:
        """Tag routing-table peers and protect the NEIGHBOURS closest to us."""
        node = self.node
        try:
            table = node.dht.routing_table
        except Exception:
            return
        me = node.peer_id
        peers = table.get_peer_ids()
        closest = set(sorted(peers, key=lambda p: _xor_distance(me, p))[:NEIGHBOURS])
        for gone in self._dht_tagged - set(peers):
            self._tags.untag_peer(gone, TAG_DHT)
            self._tags.unprotect(gone, PROTECT_NEIGHBOUR)
        self._dht_tagged = set(peers)
        for peer in peers:
            self._tags.tag_peer(peer, TAG_DHT, DHT_TAG_VALUE)
            if peer in closest:
                self._tags.protect(peer, PROTECT_NEIGHBOUR)
            else:
                self._tags.unprotect(peer, PROTECT_NEIGHBOUR)

    async def trim(self) -> int:
        """One pass: disconnect the least useful peers if above the high watermark."""
        victims = select_prune(self.snapshot(), self.low, self.high, self.grace)
        if not victims:
            return 0
        self.last_trim = time.time()
        before = self.pruned
        # All at once: closing a connection waits on its muxer, and one after the other a
        # trim of 30 took seconds on a busy node while new connections kept arriving.
        async with trio.open_nursery() as nursery:
            for peer in victims:
                nursery.start_soon(self._close, peer)
        return self.pruned - before

    async def _close(self, peer: ID) -> None:
        with trio.move_on_after(5):
            try:
                await self.node.host.disconnect(peer)
                self.pruned += 1
            except Exception:
                pass


def _id(peer: ID | str) -> ID:
    return ID.from_base58(peer) if isinstance(peer, str) else peer


__all__ = ["ConnManager", "ConnSnapshot", "select_prune"]
