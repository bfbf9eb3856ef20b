"""Events for humans: one Rich-markup line (or none) per event, the seed's style.

Events are data (punch_net/events.py); this is the one place that words them. The CLI
prints these lines; the console's Overview log shows their plain text for the kinds it
has no row style of its own for.
"""

from __future__ import annotations

import json
import time

from punch_net import events as ev
from punch_net.p2p.addresses import short_peer_id
from punch_net.torrent import events as tev
from punch_net.torrent.events import human_size


def human(e: ev.Event) -> str | None:
    """The line to print for `e`, or None for events that are for --json only."""
    p = short_peer_id
    if isinstance(e, ev.Listening):
        lines = [f"Peer ID: [bold]{e.peer_id}[/bold]", "", "Addresses others should use:"]
        lines += [f"  {a}" for a in e.addrs]
        if e.role == "server":
            lines += ["", "[green]✓[/green] Bootstrap node started. Others join with:"]
            lines += [f"  --bootstrap {a}" for a in e.addrs[:1]]
        return "\n".join(lines) + "\n"
    if isinstance(e, ev.AddrsChanged):
        return "\n".join(["[cyan]i[/cyan] Addresses others should use now:"] + [f"  {a}" for a in e.addrs])
    if isinstance(e, ev.MdnsPeer):
        return f"[green]✓[/green] found {p(e.peer_id)} on the local network (mDNS)"
    if isinstance(e, ev.PortMapped):
        if e.removed:
            return f"[dim]✗ port mapping {e.internal} removed from the router {e.gateway}[/dim]"
        lease = f"lease {e.lease}s" if e.lease else "no lease limit"
        return f"[green]✓[/green] router {e.gateway} maps {e.external} to {e.internal} ({lease})"
    if isinstance(e, ev.BootstrapRetry):
        return f"[yellow]…[/yellow] bootstrap {e.addr} unreachable ({e.error}); retry in {e.retry_in:g}s"
    if isinstance(e, ev.Bootstrapped):
        return f"[green]✓[/green] DHT bootstrapped ({e.routing_table_size} peers in routing table)"
    if isinstance(e, ev.Registered):
        return f"[green]✓[/green] Registered in DHT under '{e.namespace}'. Waiting for connections..."
    if isinstance(e, ev.PeerConnected):
        via = "" if e.via == "direct" else f", via {e.via.replace('_', ' ')}"
        return f"[green]✓[/green] CONNECTED to peer {e.peer_id} ({e.direction}, {e.addr}{via})"
    if isinstance(e, ev.HolePunch):
        mark = "[green]✓[/green]" if e.outcome in ("SUCCESS", "CONNECTION_REVERSED") else "[yellow]✗[/yellow]"
        why = f": {e.error}" if e.error else ""
        return (f"{mark} hole punch with {p(e.peer_id)} ({e.side}): {e.outcome} after "
                f"{e.attempts} attempt{'s' if e.attempts != 1 else ''}, {e.ms:.0f} ms{why}")
    if isinstance(e, ev.Reservation):
        left = max(0, int(e.expires - time.time()))
        what = "renewed" if e.renewal else "reserved"
        lines = [f"[green]✓[/green] Relay {p(e.relay)} {what} (expires in {left}s). Reachable at:"]
        return "\n".join(lines + [f"  {a}" for a in e.addrs])
    if isinstance(e, ev.ReachabilityChanged):
        return f"[cyan]i[/cyan] Reachability: {e.status}"
    if isinstance(e, ev.PeerDisconnected):
        return f"[dim]✗ disconnected from {p(e.peer_id)}[/dim]"
    if isinstance(e, ev.MessageSent | ev.MessageReceived) and e.command.startswith("capabilities"):
        return None  # housekeeping (punch_net/routing/capabilities.py); --json still has it
    if isinstance(e, ev.MessageSent):
        text = e.args.get("text") if e.command == "message" else json.dumps(e.args)
        return f"[cyan]→ SENT[/cyan] {e.command} to {p(e.peer_id)}: {text}"
    if isinstance(e, ev.Reply):
        body = json.dumps(e.result if e.ok else e.error)
        mark = "[green]← REPLY[/green]" if e.ok else "[red]← ERROR[/red]"
        return f"{mark} from {p(e.peer_id)} in {e.rtt_ms:.1f} ms: {body}"
    if isinstance(e, ev.MessageReceived):
        text = e.args.get("text") if e.command == "message" else json.dumps(e.args)
        return f"[magenta]← RECEIVED[/magenta] {e.command} from {p(e.peer_id)} ({e.sender or '?'}): {text}"
    if isinstance(e, ev.ErrorEvent):
        return f"[red]![/red] {e.message}"
    if isinstance(e, ev.Routed):
        return _routed(e)
    if isinstance(e, ev.CrawlFinished):
        return (f"[cyan]i[/cyan] crawl #{e.round}: {e.alive} of {e.known} known peers alive "
                f"({e.visited} visited in {e.duration_ms / 1000:.1f}s)")
    if isinstance(e, ev.ControlListening):
        return f"[dim]control socket: {e.path} (attach with: punch-tui --attach {e.path})[/dim]"
    if isinstance(e, ev.MetricsServing):
        return f"[dim]metrics: {e.url}[/dim]"
    if isinstance(e, ev.WebServing):
        return f"[green]✓[/green] web console: {e.url}"
    return _torrent(e)


def _routed(e: ev.Routed) -> str:
    tried = len(e.attempts)
    if not e.ok:
        return f"[red]✗[/red] {e.command} to '{e.namespace}': all {tried} candidates failed"
    best = next((c for c in e.candidates if c["peer_id"] == e.peer_id), None)
    why = "" if best is None else " (score {:.2f}: {})".format(
        best["score"], ", ".join(f"{k} {v:.2f}" for k, v in best["parts"].items()))
    over = f" after {tried - 1} failover{'s' if tried > 2 else ''}" if tried > 1 else ""
    return f"[cyan]→ ROUTED[/cyan] {e.command} to {e.peer_id[-8:]}{over}{why}"


def _torrent(e: ev.Event) -> str | None:
    if isinstance(e, tev.Shared):
        return f"[green]✓[/green] sharing {e.name} ({human_size(e.size)})  {e.info_hash}"
    if isinstance(e, tev.Unshared):
        return f"[dim]✗ no longer sharing {e.name}[/dim]"
    if isinstance(e, tev.Available):
        return (f"{e.info_hash}  {human_size(e.size):>10}  {e.providers} provider"
                f"{'s' if e.providers != 1 else ' '}  {e.name}")
    if isinstance(e, tev.Complete):
        return f"[green]✓[/green] complete: {e.path}  sha256 {e.sha256}"
    if isinstance(e, tev.PeerMarked):
        return f"[red]![/red] peer {e.peer_id} marked bad: {e.reason}"
    # announced (shared said it), hashing (the console shows it), progress (the bar draws
    # it), discovered, dht_updated, capabilities: for --json and the console only
    return None
