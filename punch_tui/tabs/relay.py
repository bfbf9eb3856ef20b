"""Relay: NAT traversal as the snapshot's `RelayStatus` reports it (punch_net/relay/status.py).

Top: our reachability, the addresses we advertise through relays, the relay service's
load and the hole-punch outcome counts. Below, one filterable table: reservations we
hold (expiry countdown, renewals, limits), reservations and circuits we serve as a relay
(peer pair, age, bytes, limit left) and the recent hole-punch attempts (outcome, timing).
"""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.widgets import Static

from punch_net.api import Snapshot
from punch_net.relay.status import RelayStatus
from punch_tui.format import age, short_id, size
from punch_tui.tabs.base import NodeTab
from punch_tui.widgets.table import Cell, FilterTable, cell

NOT_RUNNING = "Relay is not running in this role (no relay service or reservations here)."
COLUMNS = [("kind", "Kind"), ("peer", "Relay / peers"), ("state", "State"), ("time", "Expires / age"),
           ("bytes", "Bytes"), ("left", "Limit left"), ("detail", "Detail")]
OUTCOME_STYLE = {"SUCCESS": "green", "CONNECTION_REVERSED": "green", "FAILED": "red", "TIMEOUT": "yellow",
                 "NO_CONNECTION": "yellow", "PROTOCOL_ERROR": "red", "CANCELLED": "dim"}
REACH_STYLE = {"public": "green", "private": "yellow", "unknown": "dim"}
MAX_PUNCH_ROWS = 50


def _countdown(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _limits(duration: int | None, data: int | None) -> str:
    parts = [f"{duration}s" if duration else "no time cap", size(data) if data else "no data cap"]
    return " / ".join(parts)


REACHABLE_STYLE = {"announced": "green", "port-mapped": "green", "public": "green", "relayed only": "yellow"}


def reachable_text(data: RelayStatus, now: float) -> str:
    """"port-mapped for 3m00s", "relayed only for 20s": how others reach us (plain text)."""
    if data.reachable_since is None or data.reachable_as == "unknown":  # no news in how long
        return data.reachable_as
    return f"{data.reachable_as} for {age(max(0.0, now - data.reachable_since))}"


def summary(data: RelayStatus, now: float) -> list[tuple[str, str]]:
    """Key/value lines above the table (rich markup in values)."""
    reach = data.reachability
    checked = data.reachability_checked
    observed = ", ".join(data.observed_addrs) or "-"
    when = f"{age(now - checked)} ago" if checked else "not yet"
    lines = [("Reachable as", f"[{REACHABLE_STYLE.get(data.reachable_as, 'dim')}]{reachable_text(data, now)}[/]"
              + (f" · {', '.join(data.announced_addrs or data.mapped_addrs or data.confirmed_addrs)}"
                 if data.announced_addrs or data.mapped_addrs or data.confirmed_addrs else ""))]
    lines.append(("Reachability", f"[{REACH_STYLE.get(reach, 'dim')}]{reach}[/] (checked {when}; observed {observed})"))
    circuits = data.circuit_addrs
    lines.append(("Via relays", f"{circuits[0]}" + (f"  (+{len(circuits) - 1})" if len(circuits) > 1 else "")
                  if circuits else "not advertised (no active reservation)"))
    if data.service_enabled:
        lim = data.service_limits or {}
        cnt = data.service_counters
        open_circuits = sum(1 for c in data.served_circuits if c.state == "open")
        lines.append(("Relay service",
                      f"on · {len(data.served_reservations)}/{lim.get('max_reservations', '?')} "
                      f"reservations · {open_circuits}/{lim.get('max_circuits', '?')} circuits · refused "
                      f"{cnt.get('reservations_refused', 0)} res, {cnt.get('circuits_refused', 0)} circ"))
    else:
        lines.append(("Relay service", "off"))
    counts = data.outcome_counts
    total = sum(counts.values())
    shown = " · ".join(f"[{OUTCOME_STYLE.get(k, 'bold')}]{k} {v}[/]" for k, v in counts.items() if v) or "none yet"
    lines.append(("Hole punches", f"{total}: {shown}" if total else shown))
    via = data.connections_via
    lines.append(("Connections", " · ".join(f"{k.replace('_', ' ')} {v}" for k, v in via.items()) or "-"))
    return lines


def rows(data: RelayStatus, now: float) -> dict[str, list[Cell]]:
    """Table rows keyed stably, so refreshes only touch what changed."""
    out: dict[str, list[Cell]] = {}
    for r in data.reservations:
        left = r.expires - now
        state = r.state
        style = {"active": "green", "refused": "red", "lost": "yellow"}.get(state, "")
        out[f"held:{r.relay_addr}"] = [
            cell("held"), cell(short_id(r.relay or r.relay_addr)),
            cell(state, style=style), cell(_countdown(left) if r.expires else "-", left),
            cell("-"), cell(_limits(r.limit_duration, r.limit_data) if state == "active" else "-"),
            cell(r.error or f"renewals {r.renewals}"),
        ]
    for sr in data.served_reservations:
        out[f"serve:{sr.peer_id}"] = [
            cell("serving"), cell(short_id(sr.peer_id)), cell("reserved", style="green"),
            cell(_countdown(sr.expires_in_s), sr.expires_in_s), cell("-"), cell("-"),
            cell(f"{sr.ip} · age {age(sr.age_s)} · renewals {sr.renewals}"),
        ]
    for i, c in enumerate(data.served_circuits):
        caps: list[str] = []
        if c.bytes_left is not None:
            caps.append(size(c.bytes_left))
        if c.seconds_left is not None:
            caps.append(f"{int(c.seconds_left)}s")
        state = c.state
        out[f"circ:{c.src}:{c.dst}:{i}"] = [
            cell("circuit"), cell(f"{short_id(c.src)} → {short_id(c.dst)}"),
            cell(state, style="green" if state == "open" else ("red" if "limit" in state or state == "refused"
                                                               else "dim")),
            cell(age(c.age_s), c.age_s), cell(size(c.bytes), c.bytes),
            cell(" / ".join(caps) or "-"), cell(""),
        ]
    for i, p in enumerate(data.hole_punches[-MAX_PUNCH_ROWS:]):
        outcome = str(p.outcome) if p.outcome else "running"
        started = p.started or now
        out[f"punch:{p.peer_id}:{started}:{i}"] = [
            cell("hole punch"), cell(short_id(p.peer_id)),
            cell(outcome, style=OUTCOME_STYLE.get(outcome, "")), cell(f"{age(now - started)} ago", now - started),
            cell("-"), cell("-"),
            cell(f"{p.side} · {p.attempts} att · {p.ms:.0f} ms"
                 + (f" · {p.direct_addr}" if p.direct_addr else "")
                 + (f" · {p.error}" if p.error else "")),
        ]
    return out


class RelayTab(NodeTab):
    TITLE = "Relay"
    DEFAULT_CSS = """
    RelayTab #relay-info { height: auto; padding: 0 1; }
    RelayTab FilterTable { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static("waiting for the node…", id="relay-info")
        yield FilterTable(COLUMNS)

    def update_snapshot(self, snap: Snapshot) -> None:
        info = self.query_one("#relay-info", Static)
        table = self.query_one(FilterTable)
        data = snap.relay
        if data is None:
            info.update(NOT_RUNNING)
            table.set_rows({})
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True, min_width=14)
        grid.add_column()
        for key, value in summary(data, snap.ts):
            grid.add_row(key, value)
        table.set_rows(rows(data, snap.ts))
        info.update(grid)

    def filter_target(self) -> FilterTable | None:
        return self.query_one(FilterTable)
