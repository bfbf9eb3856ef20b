"""Network crawler for the monitor: maps every DHT peer it can reach.

How it works (as DHT crawlers such as nebula do): starting from our routing table, for
every peer we (1) connect, (2) run identify ourselves (agent, protocols, listen addrs —
py-libp2p does not keep the agent), (3) ping it (liveness, RTT), (4) if it speaks
Kademlia, send one FIND_NODE per bucket with a random key whose hash shares exactly
`cpl` leading bits with the peer's own key — the answers together are (close to) its
whole routing table — and queue every peer we learn about, (5) if it speaks Punch's
command protocol, ask for its capabilities (subscribing to re-announcements).

Pure parts (`keys_for_buckets`, `encode_find_node`, `decode_closer_peers`, `NetworkMap`)
are tested without sockets.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import multiaddr
import trio
import varint
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from punch_net import events as ev
from punch_net.node import Node
from punch_net.routing.capabilities import CapabilityBook, fetch_capabilities
from punch_net.routing.reputation import ReputationStore

KAD_PROTOCOL = "/ipfs/kad/1.0.0"
PUNCH_PROTOCOL = "/punch/cmd/1.0.0"
IDENTIFY_PROTOCOL = "/ipfs/id/1.0.0"
MAX_CPL = 15  # buckets 0..15, as go-libp2p crawlers query
MAX_KEY_TRIES = 1 << 18
MAX_DHT_MESSAGE = 1 << 20
QUERY_TIMEOUT = 5.0
PEER_TIMEOUT = 20.0
MAX_PEERS = 20_000
MAX_LINKS = 20_000  # edges in a snapshot's network picture
ADDR_TTL = 3600


# ---------------------------------------------------------------- pure helpers


def kad_key(peer_bytes: bytes) -> bytes:
    return hashlib.sha256(peer_bytes).digest()


def cpl(a: bytes, b: bytes) -> int:
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return len(a) * 8 - x.bit_length()


def keys_for_buckets(peer_bytes: bytes, max_cpl: int = MAX_CPL, rng: random.Random | None = None,
                     max_tries: int = MAX_KEY_TRIES) -> dict[int, bytes]:
    """For each bucket 0..max_cpl a random FIND_NODE key (a sha2-256 multihash, so servers
    accept it) whose Kademlia hash has exactly that common prefix length with the peer's.
    Bounded brute force: expected ~2**(max_cpl+1) hashes; missing buckets are left out."""
    r = rng or random.Random()
    target = kad_key(peer_bytes)
    out: dict[int, bytes] = {}
    for _ in range(max_tries):
        key = b"\x12\x20" + r.getrandbits(256).to_bytes(32, "big")
        c = cpl(kad_key(key), target)
        if c <= max_cpl and c not in out:
            out[c] = key
            if len(out) == max_cpl + 1:
                break
    return out


def encode_find_node(key: bytes) -> bytes:
    from libp2p.kad_dht.pb.kademlia_pb2 import Message

    msg = Message()
    msg.type = Message.MessageType.FIND_NODE
    msg.key = key
    body = msg.SerializeToString()
    return bytes(varint.encode(len(body))) + body


def decode_closer_peers(body: bytes) -> list[tuple[ID, list[multiaddr.Multiaddr]]]:
    """Peers (and their addresses) from a FIND_NODE response body; bad entries are skipped."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Message

    msg = Message()
    msg.ParseFromString(body)
    out = []
    for p in msg.closerPeers:
        try:
            pid = ID(p.id)
            pid.to_base58()
        except Exception:
            continue
        addrs = []
        for raw in p.addrs:
            try:
                addr = multiaddr.Multiaddr(raw)
                str(addr)  # parsing is lazy: a bad address only fails when rendered
            except Exception:
                continue
            addrs.append(addr)
        out.append((pid, addrs))
    return out


@dataclass
class PeerEntry:
    """What the monitor knows about one peer."""

    peer_id: str
    addrs: list[str] = field(default_factory=list)
    agent: str = ""
    protocol_version: str = ""
    protocols: list[str] = field(default_factory=list)
    first_seen: float = 0.0
    last_seen: float = 0.0  # last time anyone (including the peer) told us about it
    last_alive: float | None = None  # last successful contact
    alive: bool = False
    reachability: str = "unknown"  # direct / relayed / unreachable / unknown
    rtt_ms: float | None = None
    dht_server: bool = False
    punch: bool = False
    routing_table: int | None = None  # peers its FIND_NODE answers returned
    neighbours: list[str] = field(default_factory=list)
    capabilities: dict[str, Any] | None = None
    capabilities_at: float | None = None
    reputation: float | None = None
    error: str = ""
    found_via: str = ""
    crawls: int = 0

    @property
    def uptime_s(self) -> float | None:
        if not self.capabilities:
            return None
        value = self.capabilities.get("uptime_s")
        if not isinstance(value, int | float) or self.capabilities_at is None:
            return None
        return float(value) + (time.time() - self.capabilities_at)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["uptime_s"] = None if self.uptime_s is None else round(self.uptime_s, 1)
        data["neighbours"] = len(self.neighbours)
        return data


class NetworkMap:
    """Every peer the monitor has heard of (bounded), keyed by peer id."""

    def __init__(self, self_id: str = "") -> None:
        self.self_id = self_id
        self.peers: dict[str, PeerEntry] = {}
        self.rounds = 0
        self.last_round: dict[str, Any] = {}

    def seen(self, peer: str, addrs: list[str] | None = None, via: str = "") -> PeerEntry | None:
        if peer == self.self_id:
            return None
        now = time.time()
        entry = self.peers.get(peer)
        if entry is None:
            if len(self.peers) >= MAX_PEERS:
                return None
            entry = self.peers[peer] = PeerEntry(peer_id=peer, first_seen=now, found_via=via)
        entry.last_seen = now
        for a in addrs or []:
            if a not in entry.addrs:
                entry.addrs.append(a)
        del entry.addrs[32:]
        return entry

    def snapshot(self) -> dict[str, Any]:
        peers = sorted((e.to_json() for e in self.peers.values()), key=lambda p: p["peer_id"])
        return {
            "self": self.self_id,
            "rounds": self.rounds,
            "last_round": self.last_round,
            "known": len(peers),
            "alive": sum(1 for p in peers if p["alive"]),
            "peers": peers,
            "links": self.links([p["peer_id"] for p in peers]),
        }

    def links(self, order: list[str]) -> list[list[int]]:
        """Who has whom in its routing table, as [i, j] pairs (i < j) of indexes into `order`
        (the snapshot's peers): the edges of the network picture. Index pairs keep a big map's
        snapshot small; MAX_LINKS bounds it."""
        index = {p: i for i, p in enumerate(order)}
        out: set[tuple[int, int]] = set()
        for peer, entry in self.peers.items():
            i = index.get(peer)
            if i is None:
                continue
            for other in entry.neighbours:
                j = index.get(other)
                if j is not None and j != i:
                    out.add((min(i, j), max(i, j)))
                    if len(out) >= MAX_LINKS:
                        return [list(pair) for pair in sorted(out)]
        return [list(pair) for pair in sorted(out)]


# ---------------------------------------------------------------- trio adapter


async def _read_exact(stream: Any, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.read(n - len(data))
        if not chunk:
            raise EOFError("stream ended")
        data += chunk
    return data


async def _read_varint_frame(stream: Any, limit: int) -> bytes:
    shift = length = 0
    for _ in range(10):
        b = (await _read_exact(stream, 1))[0]
        length |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    else:
        raise ValueError("bad varint")
    if length > limit:
        raise ValueError(f"message of {length} bytes over the {limit} limit")
    return await _read_exact(stream, length)


async def find_node(node: Node, peer: ID, key: bytes, timeout: float = QUERY_TIMEOUT,
                    ) -> list[tuple[ID, list[multiaddr.Multiaddr]]]:
    """One FIND_NODE to one peer (our own client: py-libp2p's adds the peer to our table)."""
    with trio.fail_after(timeout):
        stream = await node.host.new_stream(peer, [KAD_PROTOCOL])  # type: ignore[list-item]
        try:
            await stream.write(encode_find_node(key))
            body = await _read_varint_frame(stream, MAX_DHT_MESSAGE)
        finally:
            try:
                await stream.close()
            except Exception:
                pass
    return decode_closer_peers(body)


async def identify(node: Node, peer: ID, timeout: float = QUERY_TIMEOUT) -> dict[str, Any]:
    """Run identify ourselves to get the agent version py-libp2p does not keep."""
    from libp2p.identity.identify.pb.identify_pb2 import Identify

    with trio.fail_after(timeout):
        stream = await node.host.new_stream(peer, [IDENTIFY_PROTOCOL])  # type: ignore[list-item]
        try:
            body = await _read_varint_frame(stream, 1 << 16)
        finally:
            try:
                await stream.close()
            except Exception:
                pass
    msg = Identify()
    msg.ParseFromString(body)
    addrs = []
    for raw in msg.listen_addrs:
        try:
            addrs.append(str(multiaddr.Multiaddr(raw)))
        except Exception:
            continue
    return {"agent": msg.agent_version, "protocol_version": msg.protocol_version,
            "protocols": list(msg.protocols), "addrs": addrs}


class Crawler:
    """Periodic crawl rounds filling a NetworkMap; runs in the monitor's nursery."""

    def __init__(self, node: Node, netmap: NetworkMap, reputation: ReputationStore, book: CapabilityBook,
                 interval: float = 60.0, concurrency: int = 8, max_cpl: int = MAX_CPL) -> None:
        self.node = node
        self.reputation = reputation
        self.book = book
        self.map = netmap
        self.interval = interval
        self.concurrency = concurrency
        self.max_cpl = max_cpl
        self.rng = random.Random(os.urandom(8))

    def _seeds(self) -> list[str]:
        seeds = {str(p) for p in self.node.connected_peers()}
        try:
            for bucket in self.node.dht.routing_table.buckets:
                seeds.update(str(p) for p in bucket.peer_ids())
        except Exception:
            pass
        seeds.update(self.map.peers)
        seeds.discard(self.map.self_id)
        return sorted(seeds)

    async def run(self) -> None:
        await self.node.bootstrapped.wait()
        while True:
            await self.crawl_once()
            await trio.sleep(self.interval)

    async def crawl_once(self) -> dict[str, Any]:
        started = time.monotonic()
        self.map.self_id = str(self.node.peer_id)
        queue_send, queue_recv = trio.open_memory_channel[str](MAX_PEERS)
        queued: set[str] = set()
        alive: set[str] = set()
        pending = 0
        done = trio.Event()

        def enqueue(peer: str) -> None:
            nonlocal pending
            if peer in queued or peer == self.map.self_id or len(queued) >= MAX_PEERS:
                return
            queued.add(peer)
            pending += 1
            queue_send.send_nowait(peer)

        for peer in self._seeds():
            self.map.seen(peer)
            enqueue(peer)
        if not queued:
            done.set()

        async def worker() -> None:
            nonlocal pending
            async for peer in queue_recv:
                try:
                    with trio.move_on_after(PEER_TIMEOUT):
                        if await self.visit(peer, enqueue):
                            alive.add(peer)
                finally:
                    pending -= 1
                    if pending == 0:
                        done.set()

        async with trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                nursery.start_soon(worker)
            await done.wait()
            nursery.cancel_scope.cancel()
        for peer, entry in self.map.peers.items():
            if peer in queued and peer not in alive:
                entry.alive = False
        self.map.rounds += 1
        summary = {"round": self.map.rounds, "visited": len(queued), "alive": len(alive),
                   "known": len(self.map.peers), "duration_ms": round((time.monotonic() - started) * 1000, 1),
                   "finished": time.time()}
        self.map.last_round = summary
        self.node.bus.publish(ev.CrawlFinished(round=self.map.rounds, visited=len(queued), alive=len(alive),
                                               known=len(self.map.peers),
                                               duration_ms=float(summary["duration_ms"])))
        return summary

    async def visit(self, peer_s: str, enqueue: Any) -> bool:
        """Crawl one peer; True when it answered."""
        node = self.node
        entry = self.map.seen(peer_s)
        if entry is None:
            return False
        entry.crawls += 1
        peer = ID.from_base58(peer_s)
        store = node.host.get_peerstore()
        if not node.host.get_network().get_connections(peer):
            try:
                addrs = list(store.addrs(peer))
            except Exception:
                addrs = []
            if not addrs and entry.addrs:
                addrs = [multiaddr.Multiaddr(a) for a in entry.addrs]
            try:
                await node.connect_peer(PeerInfo(peer, addrs))
            except Exception as exc:
                entry.alive = False
                entry.reachability = "unreachable"
                entry.error = str(exc)[:200]
                self.reputation.record_failure(peer_s)
                return False
        conns = node.host.get_network().get_connections(peer)
        relayed = bool(conns) and all("p2p-circuit" in str(c.get_transport_addresses()[:1]) for c in conns)
        entry.reachability = "relayed" if relayed else "direct"
        try:
            info = await identify(node, peer)
            entry.agent = info["agent"]
            entry.protocol_version = info["protocol_version"]
            entry.protocols = sorted(info["protocols"])
            for a in info["addrs"]:
                if a not in entry.addrs:
                    entry.addrs.append(a)
        except Exception as exc:
            entry.error = f"identify: {exc}"[:200]
        entry.dht_server = KAD_PROTOCOL in entry.protocols
        entry.punch = PUNCH_PROTOCOL in entry.protocols
        try:
            entry.rtt_ms = round(await node.ping(peer, QUERY_TIMEOUT) * 1000, 3)
            self.reputation.record_success(peer_s, entry.rtt_ms)
        except Exception as exc:
            entry.error = str(exc)[:200]
            self.reputation.record_timeout(peer_s)
        entry.alive = True
        entry.last_alive = time.time()
        if entry.dht_server:
            await self._crawl_table(peer, entry, enqueue)
        if entry.punch:
            await self._capabilities(peer_s, entry)
        entry.reputation = round(self.reputation.score(peer_s), 4)
        return True

    async def _crawl_table(self, peer: ID, entry: PeerEntry, enqueue: Any) -> None:
        keys = await trio.to_thread.run_sync(keys_for_buckets, peer.to_bytes(), self.max_cpl, self.rng)
        neighbours: dict[str, list[str]] = {}
        errors = 0
        for _cpl, key in sorted(keys.items()):
            try:
                found = await find_node(self.node, peer, key)
            except Exception:
                errors += 1
                if errors >= 3:
                    break
                continue
            for pid, addrs in found:
                neighbours.setdefault(str(pid), []).extend(str(a) for a in addrs)
        store = self.node.host.get_peerstore()
        for pid_s, addrs in neighbours.items():
            if pid_s == self.map.self_id:
                continue
            if addrs:
                try:
                    store.add_addrs(ID.from_base58(pid_s), [multiaddr.Multiaddr(a) for a in addrs], ADDR_TTL)
                except Exception:
                    pass
            self.map.seen(pid_s, addrs, via=entry.peer_id)
            enqueue(pid_s)
        entry.neighbours = sorted(neighbours)
        entry.routing_table = len(neighbours)

    async def _capabilities(self, peer: str, entry: PeerEntry) -> None:
        caps = self.book.get(peer, max(self.interval * 2, 60.0))
        if caps is None:
            try:
                caps = await fetch_capabilities(self.node, self.book, peer, QUERY_TIMEOUT)
            except Exception:
                caps = self.book.get(peer)
        if caps is not None:
            entry.capabilities = caps
            age = self.book.age(peer) or 0.0
            entry.capabilities_at = time.time() - age
