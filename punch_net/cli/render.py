"""Events for humans: one Rich-markup line (or none) per event, the seed's style.

Events are data (punch_net/events.py); this is the one place that words them. The CLI
prints these lines; the console's Overview log shows their plain text for the kinds it
has no row style of its own for.
"""

from __future__ import annotations

import json
import time

from rich.markup import escape

from punch_net import events as ev
from punch_net.p2p.addresses import short_peer_id
from punch_net.torrent import events as tev
from punch_net.torrent.events import human_size


def peers_text(n: int) -> str:
    """`1 peer`, `2 peers`."""
    return f"{n} peer" if n == 1 else f"{n} peers"


def _e(value: object) -> str:
    """Text from an event (a peer's message, a file name, an error) as markup that shows
    it as is: "[/x]" in a peer's message must not be read as a tag (a MarkupError ended
    the CLI's output task, so one message took a human-mode listener down)."""
    return escape(str(value))


def human(e: ev.Event) -> str | None:
    """The line to print for `e`, or None for events that are for --json only."""
    p = short_peer_id
    if isinstance(e, ev.Listening):
        lines = [f"Peer ID: [bold]{e.peer_id}[/bold]", "", "Addresses others should use:"]
        lines += [f"  {_e(a)}" for a in e.addrs]
        if e.role == "server":
            lines += ["", "[green]✓[/green] Bootstrap node started. Others join with:"]
            lines += [f"  --bootstrap {_e(a)}" for a in e.addrs[:1]]
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
        return bootstrap_retry(e)
    if isinstance(e, ev.Bootstrapped):
        return f"[green]✓[/green] DHT bootstrapped ({peers_text(e.routing_table_size)} in routing table)"
    if isinstance(e, ev.Registered):
        return f"[green]✓[/green] Registered in DHT under '{_e(e.namespace)}'. Waiting for connections..."
    if isinstance(e, ev.PeerConnected):
        via = "" if e.via == "direct" else f", via {e.via.replace('_', ' ')}"
        return f"[green]✓[/green] CONNECTED to peer {e.peer_id} ({e.direction}, {_e(e.addr)}{_e(via)})"
    if isinstance(e, ev.DialProgress):
        return dial_progress(e)
    if isinstance(e, ev.HolePunch):
        mark = "[green]✓[/green]" if e.outcome in ("SUCCESS", "CONNECTION_REVERSED") else "[yellow]✗[/yellow]"
        why = f": {_e(e.error)}" if e.error else ""
        return (f"{mark} hole punch with {p(e.peer_id)} ({e.side}): {e.outcome} after "
                f"{e.attempts} attempt{'s' if e.attempts != 1 else ''}, {e.ms:.0f} ms{why}")
    if isinstance(e, ev.Reservation):
        left = max(0, int(e.expires - time.time()))
        what = "renewed" if e.renewal else "reserved"
        lines = [f"[green]✓[/green] Relay {p(e.relay)} {what} (expires in {left}s). Reachable at:"]
        return "\n".join(lines + [f"  {_e(a)}" for a in e.addrs])
    if isinstance(e, ev.ReachabilityChanged):
        return f"[cyan]i[/cyan] Reachability: {e.status}"
    if isinstance(e, ev.PeerDisconnected):
        return f"[dim]✗ disconnected from {p(e.peer_id)}[/dim]"
    if isinstance(e, ev.MessageSent | ev.MessageReceived) and e.command.startswith("capabilities"):
        return None  # housekeeping (punch_net/routing/capabilities.py); --json still has it
    if isinstance(e, ev.MessageSent):
        text = e.args.get("text") if e.command == "message" else json.dumps(e.args)
        size = f" ({human_size(e.size)})" if e.size > 1024 else ""
        return f"[cyan]→ SENT[/cyan] {_e(e.command)} to {p(e.peer_id)}{size}: {_e(text)}"
    if isinstance(e, ev.Reply):
        body = json.dumps(e.result if e.ok else e.error)
        mark = "[green]← REPLY[/green]" if e.ok else "[red]← ERROR[/red]"
        return f"{mark} from {p(e.peer_id)} in {e.rtt_ms:.1f} ms: {_e(body)}"
    if isinstance(e, ev.MessageReceived):
        text = e.args.get("text") if e.command == "message" else json.dumps(e.args)
        size = f", {human_size(e.size)}" if e.size > 1024 else ""
        return (f"[magenta]← RECEIVED[/magenta] {_e(e.command)} from {p(e.peer_id)} ({_e(e.sender or '?')}{size}): "
                f"{_e(text)}")
    if isinstance(e, ev.ErrorEvent):
        return error_line(e)
    if isinstance(e, ev.Routed):
        return _routed(e)
    if isinstance(e, ev.CrawlFinished):
        return (f"[cyan]i[/cyan] crawl #{e.round}: {e.alive} of {e.known} known peers alive "
                f"({e.visited} visited in {e.duration_ms / 1000:.1f}s)")
    if isinstance(e, ev.ControlListening):
        return f"[dim]control socket: {_e(e.path)} (attach with: punch-tui --attach {_e(e.path)})[/dim]"
    if isinstance(e, ev.MetricsServing):
        return f"[dim]metrics: {_e(e.url)}[/dim]"
    if isinstance(e, ev.WebServing):
        busy = f" (port {e.busy_port} is busy: took a free one)" if e.busy_port else ""
        return f"[green]✓[/green] web console: {_e(e.url)}{busy}"
    if isinstance(e, ev.WebExposed):
        return (f"[yellow]![/yellow] web console listens on {_e(e.host)}:{e.port}, beyond this machine: anyone who "
                f"reaches it with the token gets the console (plain HTTP; an SSH tunnel to 127.0.0.1 is safer)")
    return _torrent(e)


SOURCES = {"routing_table": "routing table", "peerstore": "peerstore", "dht": "DHT"}


def dial_progress(e: ev.DialProgress) -> str:
    """`looking up 12D3…: routing table ✗, peerstore ✗, DHT → 2 addrs`, `dialing …`, …"""
    who = short_peer_id(e.peer_id)
    if e.stage == "lookup":
        steps = []
        for source in e.tried:
            name = SOURCES.get(source, source)
            if source == e.found_in:
                steps.append(f"{name} → {len(e.addrs)} addr{'s' if len(e.addrs) != 1 else ''}")
            elif source == e.tried[-1] and not e.found_in:
                steps.append(f"{name} …")
            else:
                steps.append(f"{name} ✗")
        return f"[cyan]…[/cyan] looking up {who}: {', '.join(steps)}"
    if e.stage == "dialing":
        more = f" (+{len(e.addrs) - 1} more)" if len(e.addrs) > 1 else ""
        return f"[cyan]…[/cyan] dialing {who} at {_e(e.addrs[0]) if e.addrs else '?'}{more}"
    if e.stage == "connected":
        return f"[green]✓[/green] dial {who}: {'connected' if e.tried else 'already connected'}"
    return f"[red]✗[/red] {_e(e.error)}"


def bootstrap_retry(e: ev.BootstrapRetry) -> str | None:
    """One sentence per failed try: the first three, then only at tries 4, 8, 16, ...
    (a node tries every 2 s while its bootstrap node is down; --json has every try)."""
    if e.attempt <= 3:
        return (f"[yellow]…[/yellow] bootstrap node {_e(e.addr)} unreachable ({_e(e.error)}); "
                f"next try in {e.retry_in:g} s")
    if e.attempt & (e.attempt - 1) == 0:
        return (f"[yellow]…[/yellow] bootstrap node {_e(e.addr)} still unreachable after {e.attempt} tries "
                f"({_e(e.error)}); trying every {e.retry_in:g} s")
    return None


def error_line(e: ev.ErrorEvent) -> str:
    """A failure; a repeated one (the node says it only now and then) with its count."""
    if e.repeats <= 1:
        return f"[red]![/red] {_e(e.message)}"
    if e.peer_id and e.where in ("dialer", "discovery"):
        return f"[red]![/red] peer {short_peer_id(e.peer_id)} still unreachable ({e.repeats} times): {_e(e.message)}"
    return f"[red]![/red] {_e(e.message)} ({e.repeats} times so far)"


def _routed(e: ev.Routed) -> str:
    tried = len(e.attempts)
    if not e.ok:
        return f"[red]✗[/red] {_e(e.command)} to '{_e(e.namespace)}': all {tried} candidates failed"
    best = next((c for c in e.candidates if c["peer_id"] == e.peer_id), None)
    why = "" if best is None else " (score {:.2f}: {})".format(
        best["score"], ", ".join(f"{_e(k)} {v:.2f}" for k, v in best["parts"].items()))
    over = f" after {tried - 1} failover{'s' if tried > 2 else ''}" if tried > 1 else ""
    return f"[cyan]→ ROUTED[/cyan] {_e(e.command)} to {e.peer_id[-8:]}{over}{why}"


def _torrent(e: ev.Event) -> str | None:
    if isinstance(e, tev.Shared):
        return f"[green]✓[/green] sharing {_e(e.name)} ({human_size(e.size)})  {_e(e.info_hash)}"
    if isinstance(e, tev.Unshared):
        return f"[dim]✗ no longer sharing {_e(e.name)}[/dim]"
    if isinstance(e, tev.Available):
        return (f"{_e(e.info_hash)}  {human_size(e.size):>10}  {e.providers} provider"
                f"{'s' if e.providers != 1 else ' '}  {_e(e.name)}")
    if isinstance(e, tev.Complete):
        return f"[green]✓[/green] complete: {_e(e.path)}  sha256 {_e(e.sha256)}"
    if isinstance(e, tev.PeerMarked):
        return f"[red]![/red] peer {_e(e.peer_id)} marked bad: {_e(e.reason)}"
    # announced (shared said it), hashing (the console shows it), progress (the bar draws
    # it), discovered, dht_updated, capabilities: for --json and the console only
    return None
