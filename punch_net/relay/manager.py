"""RelayManager: everything NAT traversal does for one node, and its snapshot.

- relay service (hop) on server/monitor roles, with limits from NodeConfig;
- STOP handler everywhere (accept connections relayed to us);
- reachability via AutoNAT dial-back from connected peers;
- reservation keepers: one per relay (static `--relay`, or bootstrap relays when we are
  private), renewing before expiry and re-reserving when the relay comes back;
- our `/p2p-circuit` addresses, advertised in `host.get_addrs()` (provider records too);
- circuit dialing for peers that only have circuit addresses or whose direct dial fails;
- DCUtR on every inbound relayed connection, each session recorded and published.

`status()` is the snapshot a UI reads (TUI Relay tab, `relay_status` command).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import asdict
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.tools.anyio_service import background_trio_service
from trio_typing import TaskStatus

from punch_net import events as ev
from punch_net.errors import NodeError
from punch_net.node import Node
from punch_net.p2p.addresses import AddressError, expand_unspecified, parse_dial_target
from punch_net.p2p.patches.autonat_dial_back import DialBackService
from punch_net.p2p.patches.circuit_addrs import advertise_extra_addrs
from punch_net.reach.summary import Since, reachable_as
from punch_net.relay import hop
from punch_net.relay.dcutr import PROTOCOL_ID as DCUTR_PROTOCOL
from punch_net.relay.dcutr import HolePuncher, is_public_ip, is_relayed, predict_addrs, punchable, tcp_ip_port
from punch_net.relay.outcomes import HolePunchRecord, count_outcomes
from punch_net.relay.reachability import Reachability, ask_with_addr, supports_autonat
from punch_net.relay.service import RelayService, RelayServiceLimits
from punch_net.relay.status import HeldReservation, RelayStatus, ServedCircuitInfo, ServedReservationInfo
from punch_net.routing.connmgr import ConnManager

RELAY_SERVICE_ROLES = ("server", "monitor")
RENEW_FRACTION = 0.75  # renew when this much of the TTL has passed
RESERVE_MAX_BACKOFF = 30.0
REACH_RETRY = 3.0
REACH_RECHECK = 120.0
REACH_MAX_BACKOFF = 30.0  # no verdict: retry after 3, 6, 12, 24, then every 30 s
RELAY_DELAY = 0.5  # a peer's circuits are dialed this long after its direct addresses (as go-libp2p's dial ranker)
RELAY_CLOSE_GRACE = 10.0  # keep the relayed connection this long after a direct upgrade
DCUTR_START_DELAY = 0.2  # let identify start on a new relayed connection
IDENTIFY_WAIT = 5.0
HISTORY = 200
PROTECT_TAG = "relay"


# ---------------------------------------------------------------- manager


class RelayManager:
    def __init__(self, node: Node, connmgr: ConnManager) -> None:
        self.node = node
        self.connmgr = connmgr
        cfg = node.config
        self.service_enabled = bool(cfg.relay_service and cfg.role in RELAY_SERVICE_ROLES)
        self.limits = RelayServiceLimits(
            max_reservations=cfg.relay_max_reservations,
            max_reservations_per_ip=cfg.relay_max_reservations_per_ip,
            reservation_ttl=cfg.relay_reservation_ttl,
            max_circuits=cfg.relay_max_circuits,
            max_circuits_per_peer=cfg.relay_max_circuits_per_peer,
            circuit_duration=cfg.relay_circuit_duration,
            circuit_bytes=cfg.relay_circuit_bytes,
        )
        self.reachability = Reachability.UNKNOWN
        self.reachability_checked: float | None = None
        self._reachable = Since()
        # the address an AutoNAT server last reached us at (reach/service.py may advertise it)
        self.dialed_back: str | None = None
        self.held: dict[str, HeldReservation] = {}  # by relay address text as configured
        self.punches: list[HolePunchRecord] = []
        self.punching: set[ID] = set()
        self._via: dict[int, str] = {}  # id(conn) -> direct / relay / hole_punch
        self._keepers: dict[str, trio.CancelScope] = {}  # relay address -> its keeper task
        self._nursery: trio.Nursery | None = None
        self._private = trio.Event()
        self._host: IHost | None = None
        self.protocol: CircuitV2Protocol | None = None
        self.service: RelayService | None = None
        self.autonat: DialBackService | None = None
        self.puncher: HolePuncher | None = None

    # ------------------------------------------------------------ setup

    def attach(self, host: IHost, dht: object) -> None:
        """Register protocol handlers on a host before it runs; advertise our circuits."""
        self._host = host
        advertise_extra_addrs(host, self.circuit_addrs)
        self.node.addresses.on_change(self._advertised_changed)
        if self.service_enabled:
            self.service = RelayService(host, self.limits, on_change=self._service_changed)
            self.protocol = self.service
        else:
            self.protocol = CircuitV2Protocol(host, allow_hop=False)  # STOP only: accept relayed conns
        self.autonat = DialBackService(host)
        self.puncher = HolePuncher(host, self.punch_addrs, self.listen_source, self._record_punch, self.punching)
        if self.node.config.hole_punch:
            self.puncher.install()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs for the node's lifetime (started in the node's nursery)."""
        assert self.protocol is not None
        task_status.started()
        async with background_trio_service(self.protocol), trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reachability_loop)
            for addr in self.node.config.relays:
                self._start_keeper(nursery, addr)
            cfg = self.node.config
            if cfg.auto_relay and not cfg.relays and not self.service_enabled and cfg.role != "dialer":
                nursery.start_soon(self._auto_relays, nursery)
            await trio.sleep_forever()

    # ------------------------------------------------------------ addresses

    def observed_addrs(self) -> list[str]:
        manager = getattr(self._host, "_observed_addr_manager", None)
        if manager is None:
            return []
        try:
            return [str(a) for a in manager.addrs(min_observers=1) if "/p2p-circuit" not in str(a)]
        except Exception:
            return []

    def _listen_addrs(self) -> list[str]:
        if self._host is None:
            return []
        return [str(a) for a in self._host.get_transport_addrs()]

    def listen_source(self) -> tuple[str, int] | None:
        """Where punch dials leave from: our TCP listen address and port."""
        for addr in self._listen_addrs():
            got = tcp_ip_port(addr)
            if got:
                return (self.node.config.listen_addr if ":" not in got[0] else got[0]), got[1]
        return None

    def punch_addrs(self) -> list[str]:
        """What we tell a peer in DCUtR CONNECT: predicted public addresses, then listen ones."""

        listen = [str(a) for a in expand_unspecified([multiaddr.Multiaddr(a) for a in self._listen_addrs()])]
        return punchable(predict_addrs(self.observed_addrs(), listen) + listen)

    def circuit_addrs(self) -> list[str]:
        """Our `/p2p-circuit` addresses (ending in /p2p/<us>) from every active reservation."""
        out: list[str] = []
        for held in self.held.values():
            if held.state == "active" and held.expires_in() > 0:
                out.extend(a for a in held.circuit_addrs if a not in out)
        return out

    def _make_circuit_addrs(self, dialed: str, grant: hop.ReservationGrant) -> list[str]:
        me = self.node.peer_id
        out = [hop.circuit_addr(dialed, grant.relay, me)]
        dialed_loopback = _is_loopback_addr(dialed)
        for addr in grant.relay_addrs:
            if _is_loopback_addr(addr) and not dialed_loopback:
                continue
            text = hop.circuit_addr(addr, grant.relay, me)
            if text not in out:
                out.append(text)
        return out

    # ------------------------------------------------------------ reservations

    def _start_keeper(self, nursery: trio.Nursery, addr: str) -> None:
        if addr in self._keepers:
            return
        scope = self._keepers[addr] = trio.CancelScope()
        self.held.setdefault(addr, HeldReservation(relay="", relay_addr=addr, state="reserving"))  # shown at once

        async def keeper() -> None:
            with scope:
                await self._keep_reservation(addr)

        nursery.start_soon(keeper)

    def reserve(self, addr: str) -> None:
        """Hold a reservation on the relay at `addr` from now on, renewed as with --relay
        (see `status()` for how it goes); a relay we already hold is left as it is."""
        if self._nursery is None:
            raise NodeError("the relay client is not running")
        try:
            parse_dial_target(addr)
        except AddressError as exc:
            raise NodeError(str(exc)) from None
        self._start_keeper(self._nursery, addr)

    def release(self, addr: str) -> None:
        """Stop holding the reservation on `addr`: our circuit addresses through it go."""
        scope = self._keepers.pop(addr, None)
        held = self.held.pop(addr, None)
        if scope is None:
            raise NodeError(f"no reservation on {addr} (held: {', '.join(self._keepers) or 'none'})")
        scope.cancel()
        if held is not None and held.relay:
            self.connmgr.unprotect(held.relay, PROTECT_TAG)
        self._addresses_changed()

    async def _auto_relays(self, nursery: trio.Nursery) -> None:
        """Once we are private, reserve on every bootstrap peer that speaks the hop protocol."""
        await self._private.wait()
        for addr in self.node.config.bootstrap:
            self._start_keeper(nursery, addr)

    async def _keep_reservation(self, addr: str) -> None:

        held = self.held.setdefault(addr, HeldReservation(relay="", relay_addr=addr, state="reserving"))
        backoff = 1.0
        while True:
            try:
                relay = await self.node.dial(addr)
                held.relay = str(relay)
                self._protect(relay)
                grant = await hop.reserve(self.node.host, relay)
            except hop.RelayRefused as exc:
                self._reservation_failed(held, "refused", str(exc))
            except NodeError as exc:
                self._reservation_failed(held, "lost" if held.state == "active" else "reserving", str(exc))
            except trio.TooSlowError:
                self._reservation_failed(held, held.state, f"relay {addr}: no answer to RESERVE")
            except Exception as exc:
                text = str(exc) or type(exc).__name__
                if ("protocol" in text.lower() and "support" in text.lower()) or "negotiat" in text.lower():
                    self._reservation_failed(held, "refused", f"{addr} is not a relay ({text})")
                    if addr not in self.node.config.relays:
                        return  # an auto candidate that is no relay: stop trying it
                else:
                    self._reservation_failed(held, held.state, f"reservation on {addr}: {text}")
            else:
                backoff = 1.0
                renewal = held.state == "active" and held.expires_in() > 0
                held.renewals += 1 if renewal else 0
                held.state, held.error = "active", ""
                held.expires = float(grant.expires)
                held.limit_duration, held.limit_data = grant.limit_duration, grant.limit_data
                before = list(held.circuit_addrs)
                held.circuit_addrs = self._make_circuit_addrs(addr, grant)
                if not renewal:
                    held.since = time.time()
                self.node.bus.publish(ev.Reservation(relay=held.relay, expires=held.expires, renewal=renewal,
                                                     addrs=held.circuit_addrs))
                if held.circuit_addrs != before or not renewal:
                    self._addresses_changed()
                await self._hold(relay, held)
                continue
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RESERVE_MAX_BACKOFF)

    async def _hold(self, relay: ID, held: HeldReservation) -> None:
        """Wait until renewal time, or until the relay connection drops (re-reserve at once)."""
        ttl = max(1.0, held.expires - time.time())
        renew_at = time.time() + ttl * RENEW_FRACTION
        while time.time() < renew_at:
            if not self.node.host.get_network().get_connections(relay):
                held.state, held.error = "lost", "relay connection closed"
                self._addresses_changed()
                return
            await trio.sleep(0.5)

    def _reservation_failed(self, held: HeldReservation, state: str, error: str) -> None:
        was_active = held.state == "active"
        held.state, held.error = state, error
        if state != "active":
            held.expires = 0.0
        if was_active and state != "active":
            self._addresses_changed()
        self.node.bus.publish(ev.ErrorEvent(message=error, where="relay"))

    def _protect(self, peer: ID) -> None:
        self.connmgr.protect(peer, PROTECT_TAG)

    def _addresses_changed(self) -> None:
        self._note_reachable()
        self.node.addresses_changed()

    def _advertised_changed(self, addrs: list[str]) -> None:
        self._note_reachable()

    def _note_reachable(self) -> tuple[str, float]:
        """How others reach us now, and since when (noted on every change we hear of)."""
        addresses = self.node.addresses
        kind = reachable_as(announced=bool(addresses.announce), mapped=bool(addresses.mapped),
                            observed=bool(addresses.observed), autonat=str(self.reachability),
                            circuits=bool(self.circuit_addrs()))
        return kind, self._reachable.update(kind, time.time())

    # ------------------------------------------------------------ reachability

    async def _reachability_loop(self) -> None:
        assert self.autonat is not None
        await self.node.bootstrapped.wait()
        retry = REACH_RETRY
        while True:
            servers = self._autonat_servers()
            addrs = self.punch_addrs()
            results: list[Reachability] = []
            for server in servers[:3]:
                got, dialed = await ask_with_addr(self.autonat, server, addrs)
                if got is not None:
                    results.append(got)
                if got == Reachability.PUBLIC and dialed:
                    self.dialed_back = dialed
            if not results:
                # No verdict (no servers yet, or all refused: e.g. loopback-only addresses,
                # which AutoNAT servers will not dial): back off instead of asking three
                # peers every 3 s for ever (most of an idle testnet node's CPU).
                await trio.sleep(retry)
                retry = min(retry * 2, REACH_MAX_BACKOFF)
                continue
            retry = REACH_RETRY
            new = Reachability.PUBLIC if Reachability.PUBLIC in results else Reachability.PRIVATE
            if new == Reachability.PRIVATE:
                self.dialed_back = None
            self.reachability_checked = time.time()
            if new != self.reachability:
                self.reachability = new
                self._note_reachable()
                self.node.bus.publish(ev.ReachabilityChanged(status=str(new), servers=[str(s) for s in servers[:3]]))
            if new == Reachability.PRIVATE:
                self._private.set()
            await trio.sleep(REACH_RECHECK)

    def _autonat_servers(self) -> list[ID]:
        host = self.node.host
        peers = list(self.node.bootstrap_peers) + [
            p for p in host.get_network().get_connections_map() if p not in self.node.bootstrap_peers]
        out = []
        for peer in peers:
            conns = host.get_network().get_connections(peer)
            if conns and not all(is_relayed(c) for c in conns) and supports_autonat(host, peer):
                out.append(peer)
        return out

    # ------------------------------------------------------------ dialing through relays

    def wants_relay(self, info: PeerInfo) -> bool:
        return any(hop.is_circuit(a) for a in info.addrs)

    async def connect(self, info: PeerInfo) -> str:
        """Reach a peer: its direct addresses at once, its circuits RELAY_DELAY later (or as
        soon as the direct dial fails) unless a direct connection came first; the first to
        connect wins, the rest are cancelled.
        Returns 'direct'/'relay'.

        (A NAT'd peer's direct addresses mostly lead nowhere: their dial hangs until its
        deadline. Waiting 3 s for them before the first circuit made every relayed
        connection 3 s slow.)"""

        host = self.node.host
        if host.get_network().get_connections(info.peer_id):
            return "direct"
        direct = [a for a in info.addrs if not hop.is_circuit(a)]
        circuits = [str(a) for a in info.addrs if hop.is_circuit(a)]
        won: list[str] = []
        errors: list[str] = []
        direct_failed = trio.Event()

        async with trio.open_nursery() as nursery:
            async def via_direct() -> None:
                try:
                    with trio.fail_after(self.node.config.dial_timeout):
                        await host.connect(PeerInfo(info.peer_id, direct))
                except Exception as exc:
                    errors.append(f"dial {info.peer_id}: {str(exc) or type(exc).__name__}")
                    direct_failed.set()  # (an unroutable private address fails at once)
                    return
                won.append("direct")
                nursery.cancel_scope.cancel()

            async def via_relays() -> None:
                if direct:
                    with trio.move_on_after(RELAY_DELAY):
                        await direct_failed.wait()
                for addr in circuits:
                    try:
                        await self.dial_circuit(addr)
                    except NodeError as exc:
                        errors.append(str(exc))
                        continue
                    won.append("relay")
                    nursery.cancel_scope.cancel()
                    return

            if direct:
                nursery.start_soon(via_direct)
            if circuits:
                nursery.start_soon(via_relays)
        if won:
            return won[0]
        raise NodeError("; ".join(dict.fromkeys(errors)) or f"dial {info.peer_id}: no usable address")

    async def dial_circuit(self, addr: str) -> ID:
        """Connect to `<relay>/p2p/<R>/p2p-circuit/p2p/<D>`: to the relay first, then through it."""

        try:
            base, relay, dest = hop.split_circuit_addr(addr)
        except ValueError as exc:
            raise NodeError(str(exc)) from None
        host = self.node.host
        if dest == self.node.peer_id:
            raise NodeError(f"{addr} is ourselves")
        try:
            with trio.fail_after(self.node.config.dial_timeout):
                if not host.get_network().get_connections(relay):
                    if not base:
                        raise NodeError(f"dial {addr}: relay {relay} is not connected and has no address")
                    await host.connect(PeerInfo(relay, [multiaddr.Multiaddr(base)]))
                await hop.open_circuit(host, relay, dest, timeout=self.node.config.dial_timeout)
        except hop.RelayRefused as exc:
            self.node.counters.dial_errors += 1
            raise NodeError(f"dial {str(dest)[-8:]} via relay: {exc}") from None
        except trio.TooSlowError:
            self.node.counters.dial_errors += 1
            raise NodeError(f"dial {addr}: timed out after {self.node.config.dial_timeout:g}s") from None
        except NodeError:
            raise
        except Exception as exc:
            self.node.counters.dial_errors += 1
            raise NodeError(f"dial {addr}: {str(exc) or type(exc).__name__}") from None
        return dest

    # ------------------------------------------------------------ connection events

    def on_connected(self, conn: INetConn) -> str:
        """Classify a new connection (and start DCUtR on an inbound relayed one)."""
        peer = conn.muxed_conn.peer_id
        if is_relayed(conn):
            via = "relay"
            inbound = "inbound" in str(getattr(conn, "direction", "")).lower()
            if inbound and self.node.config.hole_punch and self.puncher is not None:
                self.node.spawn(self._punch_later, peer)
        elif peer in self.punching:
            via = "hole_punch"
        else:
            via = "direct"
        self._via[id(conn)] = via
        return via

    def on_disconnected(self, conn: INetConn) -> None:
        self._via.pop(id(conn), None)

    def via_of(self, conn: Any) -> str:
        return self._via.get(id(conn)) or ("relay" if is_relayed(conn) else "direct")

    async def _punch_later(self, peer: ID) -> None:
        """DCUtR once identify told us the peer speaks it (a peer without it is no failed punch)."""
        assert self.puncher is not None
        await trio.sleep(DCUTR_START_DELAY)
        with trio.move_on_after(IDENTIFY_WAIT):
            while not self._protocols(peer):
                await trio.sleep(0.1)
        protocols = self._protocols(peer)
        if protocols and str(DCUTR_PROTOCOL) not in protocols:
            return
        await self.puncher.initiate(peer)

    def _protocols(self, peer: ID) -> list[str]:
        try:
            return [str(p) for p in self.node.host.get_peerstore().get_protocols(peer) or []]
        except Exception:
            return []

    def _record_punch(self, rec: HolePunchRecord) -> None:
        self.punches.append(rec)
        del self.punches[:-HISTORY]
        self.node.bus.publish(ev.HolePunch(peer_id=rec.peer_id, outcome=str(rec.outcome), attempts=rec.attempts,
                                           ms=rec.ms, side=rec.side, error=rec.error))
        if rec.outcome is not None and rec.outcome.value in ("SUCCESS", "CONNECTION_REVERSED"):
            self.node.spawn(self._migrate, ID.from_base58(rec.peer_id))

    async def _migrate(self, peer: ID) -> None:
        """Move traffic to the direct connection: fresh command session now, relay leg closed later."""
        self.node.drop_session(peer)
        await trio.sleep(RELAY_CLOSE_GRACE)
        network = self.node.host.get_network()
        conns = network.get_connections(peer)
        if any(not is_relayed(c) for c in conns):
            for conn in conns:
                if is_relayed(conn):
                    with trio.move_on_after(2):
                        try:
                            await conn.close()
                        except Exception:
                            pass

    def _service_changed(self, kind: str, **info: Any) -> None:
        pass  # the snapshot is read on demand; hook kept for future events

    # ------------------------------------------------------------ snapshot

    def status(self) -> RelayStatus:
        now = time.time()
        served_res: list[ServedReservationInfo] = []
        served_circ: list[ServedCircuitInfo] = []
        counters: dict[str, int] = {}
        limits: dict[str, int] | None = None
        if self.service is not None:
            limits = asdict(self.limits)
            for r in self.service._live_reservations().values():
                served_res.append(ServedReservationInfo(r.peer_id, r.ip, round(now - r.created, 1),
                                                        round(max(0.0, r.expires - now), 1), r.renewals))
            for c in self.service.track.circuits:
                end = c.ended or now
                served_circ.append(ServedCircuitInfo(
                    c.src, c.dst, round(end - c.started, 1), c.bytes,
                    (c.bytes_limit - c.bytes) if c.bytes_limit else None,
                    round(max(0.0, c.duration_limit - (end - c.started)), 1) if c.duration_limit else None,
                    c.outcome))
            counters = asdict(self.service.track.counters)
        via_counts: dict[str, int] = {"direct": 0, "relay": 0, "hole_punch": 0}
        if self._host is not None:
            for conns in self._host.get_network().get_connections_map().values():
                for conn in conns:
                    v = self.via_of(conn)
                    via_counts[v] = via_counts.get(v, 0) + 1
        kind, since = self._note_reachable()
        addresses = self.node.addresses
        return RelayStatus(
            reachable_as=kind,
            reachable_since=since,
            announced_addrs=[str(a) for a in addresses.announce],
            mapped_addrs=addresses.mapped,
            confirmed_addrs=addresses.observed,
            reachability=str(self.reachability),
            reachability_checked=self.reachability_checked,
            observed_addrs=self.observed_addrs(),
            circuit_addrs=self.circuit_addrs(),
            reservations=[HeldReservation(**asdict(h)) for h in self.held.values()],
            service_enabled=self.service_enabled,
            service_limits=limits,
            served_reservations=served_res,
            served_circuits=served_circ,
            service_counters=counters,
            hole_punches=list(self.punches),
            outcome_counts=count_outcomes(self.punches),
            connections_via=via_counts,
        )


def _is_loopback_addr(addr: str) -> bool:
    got = tcp_ip_port(addr.split("/p2p/")[0])
    if got is None:
        return False
    try:
        return ipaddress.ip_address(got[0]).is_loopback
    except ValueError:
        return False


__all__ = ["RELAY_SERVICE_ROLES", "HeldReservation", "RelayManager", "RelayStatus", "is_public_ip"]
