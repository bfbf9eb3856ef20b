"""The monitor's crawled network as a picture: peers on a ring, grouped and coloured by
reachability, lines where one has the other in its routing table (braille dots, so a
line is 2x4 dots per cell), and a legend that names each peer drawn.

Input is the `network` part of a Snapshot (punch_net/dht/crawler.py `NetworkMap.snapshot`:
`peers` and `links`, index pairs into `peers`), the same in-process and attached; the
web view serves this same console, so the picture is there too. The layout and the
drawing are pure (unit-tested); the widget draws them at its size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from punch_tui.format import short_id

REACH_STYLE = {"direct": "bold green", "relayed": "bold yellow", "unreachable": "bold red", "unknown": "bold white"}
REACH_ORDER = ("direct", "relayed", "unreachable", "unknown")
LABELS = "123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
LEGEND_WIDTH = 30
EDGE_STYLE = "grey50"
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # braille dot bits by (y % 4, x % 2)


@dataclass(frozen=True)
class MapPeer:
    peer_id: str
    reach: str
    alive: bool
    dht_server: bool
    degree: int
    label: str = ""


def map_peers(network: Mapping[str, object]) -> tuple[list[MapPeer], list[tuple[int, int]]]:
    """The peers (in the snapshot's order) and links of a network snapshot, checked: the
    map is JSON, so anything malformed is skipped rather than trusted."""
    raw = network.get("peers")
    peers: list[MapPeer] = []
    for p in raw if isinstance(raw, list) else []:
        if not isinstance(p, dict) or not isinstance(p.get("peer_id"), str):
            continue
        reach = str(p.get("reachability") or "unknown")
        peers.append(MapPeer(p["peer_id"], reach if reach in REACH_STYLE else "unknown", bool(p.get("alive")),
                             bool(p.get("dht_server")), 0))
    links: list[tuple[int, int]] = []
    raw_links = network.get("links")
    for pair in raw_links if isinstance(raw_links, list) else []:
        if (isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, int) for i in pair)
                and 0 <= pair[0] < len(peers) and 0 <= pair[1] < len(peers) and pair[0] != pair[1]):
            links.append((pair[0], pair[1]))
    degree = [0] * len(peers)
    for a, b in links:
        degree[a] += 1
        degree[b] += 1
    peers = [MapPeer(p.peer_id, p.reach, p.alive, p.dht_server, degree[i]) for i, p in enumerate(peers)]
    return peers, links


def choose(peers: Sequence[MapPeer], links: Sequence[tuple[int, int]],
           limit: int) -> tuple[list[MapPeer], list[tuple[int, int]]]:
    """At most `limit` peers (alive and well-connected first), ordered round the ring by
    reachability then peer id so each colour is one arc; links renumbered among them."""
    ranked = sorted(range(len(peers)), key=lambda i: (not peers[i].alive, -peers[i].degree, peers[i].peer_id))
    keep = ranked[:max(0, limit)]
    keep.sort(key=lambda i: (REACH_ORDER.index(peers[i].reach), peers[i].peer_id))
    new_index = {old: new for new, old in enumerate(keep)}
    chosen = [MapPeer(peers[i].peer_id, peers[i].reach, peers[i].alive, peers[i].dht_server, peers[i].degree,
                      LABELS[n] if n < len(LABELS) else "•") for n, i in enumerate(keep)]
    kept_links = [(new_index[a], new_index[b]) for a, b in links if a in new_index and b in new_index]
    return chosen, kept_links


def ring_layout(n: int, width: int, height: int) -> list[tuple[int, int]]:
    """Cell positions of n peers evenly on an ellipse filling width x height (the first at
    the top, clockwise); one peer sits in the middle."""
    if n <= 0 or width <= 0 or height <= 0:
        return []
    cx, cy = (width - 1) / 2, (height - 1) / 2
    if n == 1:
        return [(round(cx), round(cy))]
    rx, ry = max(0.0, cx - 1), max(0.0, cy)
    out = []
    for i in range(n):
        angle = -math.pi / 2 + 2 * math.pi * i / n
        out.append((round(cx + rx * math.cos(angle)), round(cy + ry * math.sin(angle))))
    return out


def capacity(width: int, height: int) -> int:
    """How many peers the ring holds with a free cell between neighbours."""
    if width <= 2 or height <= 2:
        return 0
    a, b = (width - 3) / 2, (height - 1) / 2
    perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan
    return max(1, min(len(LABELS), int(perimeter / 2)))


class BrailleCanvas:
    """Lines in braille dots: each cell is 2 dots wide and 4 high."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.cells = [[0] * width for _ in range(height)]

    def dot(self, x: int, y: int) -> None:
        if 0 <= x < self.width * 2 and 0 <= y < self.height * 4:
            self.cells[y // 4][x // 2] |= DOTS[y % 4][x % 2]

    def line(self, x0: int, y0: int, x1: int, y1: int) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(steps + 1):
            self.dot(round(x0 + (x1 - x0) * i / steps), round(y0 + (y1 - y0) * i / steps))

    def char(self, col: int, row: int) -> str:
        bits = self.cells[row][col]
        return chr(0x2800 + bits) if bits else " "


def draw_map(peers: Sequence[MapPeer], links: Sequence[tuple[int, int]], width: int, height: int) -> list[Text]:
    """The ring of labelled peers with their links, `height` lines of `width` cells."""
    pos = ring_layout(len(peers), width, height)
    canvas = BrailleCanvas(width, height)
    for a, b in links:
        (xa, ya), (xb, yb) = pos[a], pos[b]
        canvas.line(xa * 2 + 1, ya * 4 + 2, xb * 2 + 1, yb * 4 + 2)
    at = {p: i for i, p in enumerate(pos)}
    lines: list[Text] = []
    for row in range(height):
        line = Text(no_wrap=True)
        run = ""  # edge cells between two peers: one span
        for col in range(width):
            i = at.get((col, row))
            if i is None:
                run += canvas.char(col, row)
                continue
            line.append(run, style=EDGE_STYLE)
            run = ""
            p = peers[i]
            line.append(p.label, style=REACH_STYLE[p.reach] + ("" if p.alive else " dim strike"))
        line.append(run, style=EDGE_STYLE)
        lines.append(line)
    return lines


def legend(peers: Sequence[MapPeer], total: int, n_links: int, width: int, height: int) -> list[Text]:
    """Colour key, then one line per peer drawn: its label, short id, state and links."""
    keys = [Text(no_wrap=True), Text(no_wrap=True)]
    for n, reach in enumerate(REACH_ORDER):
        keys[n // 2].append("● ", style=REACH_STYLE[reach])
        keys[n // 2].append(reach + " ")
    head = Text(f"{total} peers · {n_links} links", style="bold", no_wrap=True)
    lines = [head, *keys]
    room = max(0, height - len(lines))
    rows = list(peers)
    more = len(rows) - room
    if more > 0:
        rows = rows[:max(0, room - 1)]
    for p in rows:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"{p.label} ", style=REACH_STYLE[p.reach])
        line.append(short_id(p.peer_id, 12))
        line.append(f" {'up' if p.alive else 'down'} {p.degree}↔{' dht' if p.dht_server else ''}", style="dim")
        lines.append(line)
    if more > 0:
        lines.append(Text(f"… {more} more (table: m)", style="dim"))
    if total > len(peers):
        lines[0].append(f" ({len(peers)} drawn)", style="dim")
    for line in lines:
        line.truncate(width, overflow="ellipsis")
    return lines


def network_picture(network: Mapping[str, object] | None, width: int, height: int) -> tuple[list[Text], list[MapPeer]]:
    """The whole picture (ring + legend on the right) and the peers it draws."""
    if network is None:
        return [Text("not a monitor: run `punch monitor` to map the network", style="dim")], []
    peers, links = map_peers(network)
    if not peers:
        return [Text("no peers crawled yet", style="dim")], []
    legend_w = min(LEGEND_WIDTH, max(0, width // 3))
    ring_w = max(4, width - legend_w - 1)
    chosen, kept = choose(peers, links, capacity(ring_w, height))
    ring = draw_map(chosen, kept, ring_w, height)
    side = legend(chosen, len(peers), len(links), legend_w, height)
    out = []
    for i in range(height):
        line = ring[i].copy()
        line.append(" ")
        if i < len(side):
            line.append_text(side[i])
        out.append(line)
    return out, chosen


class NetworkPicture(Widget):
    """The crawled network as a picture (the Network tab's map view)."""

    DEFAULT_CSS = "NetworkPicture { height: 1fr; }"
    can_focus = True

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.network: Mapping[str, object] | None = None
        self.drawn: list[MapPeer] = []

    def show(self, network: Mapping[str, object] | None) -> None:
        self.network = network
        self.refresh()

    def render(self) -> Text:
        lines, self.drawn = network_picture(self.network, self.size.width, self.size.height)
        return Text("\n").join(lines)
