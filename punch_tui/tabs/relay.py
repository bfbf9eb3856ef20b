"""Relay: NAT traversal as `node.relay_status()` reports it (punch_net/relay/manager.py).

Top: our reachability, the addresses we advertise through relays, the relay service's
load and the hole-punch outcome counts. Below, one filterable table: reservations we
hold (expiry countdown, renewals, limits), reservations and circuits we serve as a relay
(peer pair, age, bytes, limit left) and the recent hole-punch attempts (outcome, timing).
A snapshot that is not a RelayStatus (another node version) is shown key by key.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from textual.app import ComposeResult
from textual.widgets import Static

from punch_tui.format import age, short_id, size
from punch_tui.snapshot import Snapshot
from punch_tui.tabs.base import NodeTab
from punch_tui.tabs.transfers import _fmt
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


def summary(data: dict[str, Any], now: float) -> list[tuple[str, str]]:
    """Key/value lines above the table (rich markup in values)."""
    reach = str(data.get("reachability", "unknown"))
    checked = data.get("reachability_checked")
    observed = ", ".join(data.get("observed_addrs") or []) or "-"
    when = f"{age(now - checked)} ago" if checked else "not yet"
    lines = [("Reachability", f"[{REACH_STYLE.get(reach, 'dim')}]{reach}[/] (checked {when}; observed {observed})")]
    circuits = data.get("circuit_addrs") or []
    lines.append(("Via relays", f"{circuits[0]}" + (f"  (+{len(circuits) - 1})" if len(circuits) > 1 else "")
                  if circuits else "not advertised (no active reservation)"))
    if data.get("service_enabled"):
        lim = data.get("service_limits") or {}
        cnt = data.get("service_counters") or {}
        open_circuits = sum(1 for c in data.get("served_circuits") or [] if c.get("state") == "open")
        lines.append(("Relay service",
                      f"on · {len(data.get('served_reservations') or [])}/{lim.get('max_reservations', '?')} "
                      f"reservations · {open_circuits}/{lim.get('max_circuits', '?')} circuits · refused "
                      f"{cnt.get('reservations_refused', 0)} res, {cnt.get('circuits_refused', 0)} circ"))
    else:
        lines.append(("Relay service", "off"))
    counts = data.get("outcome_counts") or {}
    total = sum(counts.values())
    shown = " · ".join(f"[{OUTCOME_STYLE.get(k, 'bold')}]{k} {v}[/]" for k, v in counts.items() if v) or "none yet"
    lines.append(("Hole punches", f"{total}: {shown}" if total else shown))
    via = data.get("connections_via") or {}
    lines.append(("Connections", " · ".join(f"{k.replace('_', ' ')} {v}" for k, v in via.items()) or "-"))
    return lines


def rows(data: dict[str, Any], now: float) -> dict[str, list[Cell]]:
    """Table rows keyed stably, so refreshes only touch what changed."""
    out: dict[str, list[Cell]] = {}
    for r in data.get("reservations") or []:
        left = float(r.get("expires") or 0) - now
        state = str(r.get("state", ""))
        style = {"active": "green", "refused": "red", "lost": "yellow"}.get(state, "")
        out[f"held:{r.get('relay_addr')}"] = [
            cell("held"), cell(short_id(str(r.get("relay") or r.get("relay_addr", "")))),
            cell(state, style=style), cell(_countdown(left) if r.get("expires") else "-", left),
            cell("-"), cell(_limits(r.get("limit_duration"), r.get("limit_data")) if state == "active" else "-"),
            cell(r.get("error") or f"renewals {r.get('renewals', 0)}"),
        ]
    for r in data.get("served_reservations") or []:
        out[f"serve:{r.get('peer_id')}"] = [
            cell("serving"), cell(short_id(str(r.get("peer_id")))), cell("reserved", style="green"),
            cell(_countdown(float(r.get("expires_in_s") or 0)), r.get("expires_in_s")), cell("-"), cell("-"),
            cell(f"{r.get('ip')} · age {age(r.get('age_s'))} · renewals {r.get('renewals', 0)}"),
        ]
    for i, c in enumerate(data.get("served_circuits") or []):
        caps: list[str] = []
        if c.get("bytes_left") is not None:
            caps.append(size(c["bytes_left"]))
        if c.get("seconds_left") is not None:
            caps.append(f"{int(c['seconds_left'])}s")
        state = str(c.get("state", ""))
        out[f"circ:{c.get('src')}:{c.get('dst')}:{i}"] = [
            cell("circuit"), cell(f"{short_id(str(c.get('src')))} → {short_id(str(c.get('dst')))}"),
            cell(state, style="green" if state == "open" else ("red" if "limit" in state or state == "refused"
                                                               else "dim")),
            cell(age(c.get("age_s")), c.get("age_s")), cell(size(c.get("bytes") or 0), c.get("bytes")),
            cell(" / ".join(caps) or "-"), cell(""),
        ]
    punches = (data.get("hole_punches") or [])[-MAX_PUNCH_ROWS:]
    for i, p in enumerate(punches):
        outcome = str(p.get("outcome") or "running")
        started = float(p.get("started") or now)
        out[f"punch:{p.get('peer_id')}:{started}:{i}"] = [
            cell("hole punch"), cell(short_id(str(p.get("peer_id")))),
            cell(outcome, style=OUTCOME_STYLE.get(outcome, "")), cell(f"{age(now - started)} ago", now - started),
            cell("-"), cell("-"),
            cell(f"{p.get('side')} · {p.get('attempts')} att · {p.get('ms', 0):.0f} ms"
                 + (f" · {p['direct_addr']}" if p.get("direct_addr") else "")
                 + (f" · {p['error']}" if p.get("error") else "")),
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
        if "reachability" in data:
            for key, value in summary(data, snap.ts):
                grid.add_row(key, value)
            table.set_rows(rows(data, snap.ts))
        else:  # an unknown snapshot shape: show it key by key
            for key, value in data.items():
                grid.add_row(key.replace("_", " "), _fmt(value))
            table.set_rows({})
        info.update(grid)

    def filter_target(self) -> FilterTable | None:
        return self.query_one(FilterTable)
