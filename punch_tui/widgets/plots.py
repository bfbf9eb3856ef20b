"""Pictures of the node: live plots over the last minutes (traffic, connections, request
rate, errors, lookup latency, a transfer's rate), the DHT's bucket fill as a bar chart.

Everything is computed from `Snapshot`s (punch_net/api.py), which a local and an attached
console get alike, so the plots look the same either way. The pure parts (series buffers,
rates from counters, scales, the chart text, the grid's shape) are tested without a
terminal; the widgets only draw them at their size.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from punch_net.api import RoutingTableInfo, Snapshot
from punch_tui.format import ms, rate

WINDOW_S = 300.0  # the plots show the last five minutes
BLOCKS = " ▁▂▃▄▅▆▇█"
MIN_PLOT_WIDTH = 26  # three plots side by side in 80 columns
MIN_PLOT_HEIGHT = 5  # title, three chart rows, the time axis


# ---------------------------------------------------------------- series


class Series:
    """(time, value) samples over the last `window` seconds; None is a gap (no sample)."""

    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self.points: deque[tuple[float, float | None]] = deque()

    def add(self, ts: float, value: float | None) -> None:
        self.points.append((ts, value))
        while self.points and self.points[0][0] < ts - self.window:
            self.points.popleft()

    def clear(self) -> None:
        self.points.clear()

    @property
    def last(self) -> float | None:
        for _, v in reversed(self.points):
            if v is not None:
                return v
        return None

    @property
    def peak(self) -> float:
        return max((v for _, v in self.points if v is not None), default=0.0)


class CounterRate:
    """Per-second rate of a cumulative counter, from successive readings. A counter that
    went down (the node restarted, another node attached) starts afresh: no sample."""

    def __init__(self) -> None:
        self.prev: tuple[float, float] | None = None

    def update(self, ts: float, total: float) -> float | None:
        prev, self.prev = self.prev, (ts, total)
        if prev is None or ts <= prev[0] or total < prev[1]:
            return None
        return (total - prev[1]) / (ts - prev[0])


@dataclass(frozen=True)
class PlotSpec:
    key: str  # a NodeHistory series
    title: str
    kind: str  # bytes (per second) | count | per_s | ms
    style: str
    short: str = ""  # the title where the full one does not fit


PLOTS = {
    "in": PlotSpec("in", "traffic in", "bytes", "green", "in"),
    "out": PlotSpec("out", "traffic out", "bytes", "cyan", "out"),
    "connections": PlotSpec("connections", "connections", "count", "magenta", "conns"),
    "requests": PlotSpec("requests", "requests", "per_s", "blue", "reqs"),  # sent and served
    "errors": PlotSpec("errors", "errors", "per_s", "red"),
    "latency": PlotSpec("latency", "DHT lookup", "ms", "yellow", "lookup"),
}
TRANSFER_PLOTS = (PlotSpec("down", "download", "bytes", "green"), PlotSpec("up", "upload", "bytes", "cyan"))


class NodeHistory:
    """The console's time series, one sample per snapshot: wire traffic in/out (B/s),
    connected peers, commands sent and served per second, errors per second (failed
    requests and dials, rejected streams, failed lookups) and the mean DHT lookup time
    of the lookups that finished since the last snapshot (a gap when none did); and per
    transfer its download and upload rate (kept for a window after the transfer was last
    listed: a snapshot that misses it for a moment does not wipe its history)."""

    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self.series = {key: Series(window) for key in PLOTS}
        self.transfers: dict[str, tuple[Series, Series]] = {}  # info hash -> (download, upload)
        self._listed: dict[str, float] = {}  # info hash -> when a snapshot last listed it
        self._rates = {key: CounterRate() for key in ("in", "out", "requests", "errors", "lookups", "lookup_ms")}
        self.peer_id = ""
        self.now = 0.0

    def add(self, snap: Snapshot) -> None:
        stats = snap.stats
        if stats is None:  # starting, or the link is down: no sample rather than a false zero
            return
        if stats.peer_id != self.peer_id:  # attached to another node (or it restarted)
            self.peer_id = stats.peer_id
            for series in self.series.values():
                series.clear()
            self.transfers.clear()
            self._listed.clear()
            for counter in self._rates.values():
                counter.prev = None
        ts = self.now = snap.ts
        s, r = self.series, self._rates
        s["in"].add(ts, r["in"].update(ts, stats.bytes_in))
        s["out"].add(ts, r["out"].update(ts, stats.bytes_out))
        s["connections"].add(ts, float(stats.connections))
        s["requests"].add(ts, r["requests"].update(ts, stats.messages_in + stats.messages_out))
        s["errors"].add(ts, r["errors"].update(
            ts, stats.errors + stats.dial_errors + stats.rejected + stats.lookup_failures))
        lookups = r["lookups"].update(ts, stats.lookups)
        total_ms = r["lookup_ms"].update(ts, stats.lookup_ms)
        s["latency"].add(ts, total_ms / lookups if lookups and total_ms is not None else None)
        for t in snap.transfers or []:
            down, up = self.transfers.setdefault(t.info_hash, (Series(self.window), Series(self.window)))
            down.add(ts, t.bytes_per_s)
            up.add(ts, t.upload_bytes_per_s)
            self._listed[t.info_hash] = ts
        for gone in [k for k, at in self._listed.items() if at < ts - self.window]:
            del self._listed[gone], self.transfers[gone]

    def transfer(self, info_hash: str) -> tuple[Series, Series]:
        """(download, upload) rates of one transfer; empty series when it is not known."""
        return self.transfers.get(info_hash) or (Series(self.window), Series(self.window))


# ---------------------------------------------------------------- scales and labels


def nice_scale(peak: float, kind: str = "count") -> float:
    """The top of the y axis: a round value ≥ peak (powers of two for bytes, 1-2-5 steps
    otherwise, whole numbers for counts); 1 when there is nothing to show."""
    if peak <= 0 or not math.isfinite(peak):
        return 1.0
    if kind == "bytes":
        return float(2 ** math.ceil(math.log2(max(1.0, peak))))
    exp = math.floor(math.log10(peak))
    for m in (1, 2, 5, 10):
        top = m * 10.0 ** exp
        if top >= peak * (1 - 1e-9):
            return max(1.0, top) if kind == "count" else top
    return 10.0 ** (exp + 1)


def axis_label(value: float, kind: str) -> str:
    """A short y-axis label: `4KiB`, `512B`, `2.5k`, `0.2`, `50ms`."""
    if kind == "bytes":
        for unit in ("B", "KiB", "MiB", "GiB"):
            if value < 1024 or unit == "GiB":
                return f"{value:.3g}{unit}"
            value /= 1024
    text = ""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if value >= div:
            text = f"{value / div:.3g}{unit}"
            break
    text = text or f"{value:.3g}"
    return text + ("ms" if kind == "ms" else "")


def value_text(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "bytes":
        return rate(value)
    if kind == "ms":
        return ms(value)
    if kind == "per_s":
        return f"{value:.1f}/s"
    return f"{value:.0f}"


def window_text(seconds: float) -> str:
    return f"-{seconds / 60:g}m" if seconds >= 60 else f"-{seconds:g}s"


# ---------------------------------------------------------------- charts


def columns(points: Sequence[tuple[float, float | None]], now: float, window: float,
            width: int) -> list[float | None]:
    """The samples binned into `width` columns over [now - window, now] (newest right);
    a column shows its largest sample (a spike stays visible), None where there is none."""
    out: list[float | None] = [None] * max(0, width)
    if width <= 0:
        return out
    step = window / width
    for ts, v in points:
        if v is None:
            continue
        age = max(0.0, now - ts)
        if age >= window:
            continue
        c = width - 1 - int(age / step)
        prev = out[c]
        out[c] = v if prev is None else max(prev, v)
    return out


def bar_rows(values: Sequence[float | None], scale: float, height: int) -> list[str]:
    """Block-character bars, `height` rows top to bottom; any value above zero shows at
    least one eighth (a trickle is not nothing)."""
    rows: list[str] = []
    eighths = []
    for v in values:
        if v is None or v <= 0 or scale <= 0:
            eighths.append(0)
            continue
        e = min(height * 8, round(v / scale * height * 8))
        eighths.append(max(1, e))
    for row in range(height):
        level = (height - 1 - row) * 8
        rows.append("".join(BLOCKS[max(0, min(8, e - level))] for e in eighths))
    return rows


@dataclass(frozen=True)
class PlotView:
    """What a drawn plot showed (tests read it): its peak and the top of its scale."""

    key: str
    peak: float
    scale: float
    last: float | None


def plot_lines(spec: PlotSpec, series: Series, now: float, width: int, height: int,
               window: float = WINDOW_S) -> tuple[list[Text], PlotView]:
    """One plot as `height` lines of `width` cells: a title with the current value and the
    peak, a chart with its y scale on the left, and the time axis (when there is room)."""
    width, height = max(8, width), max(2, height)
    axis = height >= 4
    chart_h = height - 1 - (1 if axis else 0)
    # the y labels' width depends on the scale, the scale on the columns: two passes
    label_w = 5
    cols = columns(series.points, now, window, max(1, width - label_w - 1))
    peak = max((v for v in cols if v is not None), default=0.0)
    scale = nice_scale(peak, spec.kind)
    top = axis_label(scale, spec.kind)
    label_w = max(1, len(top))
    chart_w = max(1, width - label_w - 1)
    cols = columns(series.points, now, window, chart_w)
    view = PlotView(spec.key, peak, scale, series.last)

    title = Text(no_wrap=True, overflow="ellipsis")
    now_text = f" {value_text(series.last, spec.kind)}"
    name = spec.title if len(spec.title) + len(now_text) <= width or not spec.short else spec.short
    title.append(name, style=f"bold {spec.style}")
    title.append(now_text)
    peak_text = f" · max {value_text(peak, spec.kind)}"
    if series.last is not None and title.cell_len + len(peak_text) <= width:  # where it fits whole
        title.append(peak_text, style="dim")
    title.truncate(width, overflow="ellipsis")
    lines = [title]
    for i, row in enumerate(bar_rows(cols, scale, chart_h)):
        line = Text(no_wrap=True)
        label = top if i == 0 else ("0" if i == chart_h - 1 else "")
        line.append(label.rjust(label_w) + ("┤" if label else "│"), style="dim")
        line.append(row, style=spec.style)
        lines.append(line)
    if axis:
        left, right = window_text(window), "now"
        fill = max(0, chart_w - len(left) - len(right) - 2)
        lines.append(Text(" " * label_w + "└" + left + " " + "─" * fill + " " + right, style="dim",
                          no_wrap=True))
    return lines, view


def grid_shape(n: int, width: int, height: int, min_w: int = MIN_PLOT_WIDTH,
               min_h: int = MIN_PLOT_HEIGHT) -> tuple[int, int]:
    """(columns, rows) of plots for a width x height area: as many of the n plots as fit at
    their minimum size, the first ones first, spread evenly."""
    if n <= 0 or width <= 0 or height <= 0:
        return 0, 0
    cols = max(1, min(n, width // min_w))
    rows = max(1, min(math.ceil(n / cols), height // min_h))
    shown = min(n, cols * rows)
    return math.ceil(shown / rows), rows


def join_columns(blocks: Sequence[Sequence[Text]], widths: Sequence[int], gap: int = 1) -> list[Text]:
    """Place blocks of lines side by side, each padded to its width."""
    height = max((len(b) for b in blocks), default=0)
    out: list[Text] = []
    for i in range(height):
        line = Text(no_wrap=True)
        for j, (block, w) in enumerate(zip(blocks, widths, strict=True)):
            part = block[i].copy() if i < len(block) else Text()
            part.truncate(w, pad=True)
            line.append_text(part)
            if j < len(blocks) - 1:
                line.append(" " * gap)
        out.append(line)
    return out


class PlotGrid(Widget):
    """Several live plots of a NodeHistory in a grid that fits its size: as many as fit,
    in the order given (three in 80 columns, six at 120x40)."""

    DEFAULT_CSS = "PlotGrid { height: 1fr; min-height: 5; }"

    def __init__(self, history: NodeHistory, keys: Sequence[str], *, min_width: int = MIN_PLOT_WIDTH,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.history = history
        self.keys = list(keys)
        self.min_width = min_width
        self.views: dict[str, PlotView] = {}

    def update_plots(self) -> None:
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        cols, rows = grid_shape(len(self.keys), width, height, self.min_width)
        if not cols:
            return Text()
        gap = 2
        cell_w = (width - gap * (cols - 1)) // cols
        cell_h = height // rows
        self.views = {}
        lines: list[Text] = []
        for r in range(rows):
            blocks, widths = [], []
            for key in self.keys[r * cols:(r + 1) * cols]:
                block, view = plot_lines(PLOTS[key], self.history.series[key], self.history.now, cell_w, cell_h,
                                         self.history.series[key].window)
                self.views[key] = view
                blocks.append(block)
                widths.append(cell_w)
            lines += join_columns(blocks, widths, gap)
        return Text("\n").join(lines)


class RatePlot(Widget):
    """One series as a plot at the widget's size (a transfer's rate in its details)."""

    DEFAULT_CSS = "RatePlot { height: 6; }"

    def __init__(self, spec: PlotSpec, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spec = spec
        self.series = Series()
        self.now = 0.0
        self.view: PlotView | None = None

    def show(self, series: Series, now: float) -> None:
        self.series, self.now = series, now
        self.refresh()

    def render(self) -> Text:
        lines, self.view = plot_lines(self.spec, self.series, self.now, self.size.width, self.size.height,
                                      self.series.window)
        return Text("\n").join(lines)


# ---------------------------------------------------------------- DHT buckets


def bucket_fill(rt: RoutingTableInfo | None) -> list[tuple[int, int, int]]:
    """(cpl, peers, connected) for every common-prefix length from 0 to the deepest
    non-empty bucket: empty ones included, so the chart's x axis has no holes."""
    if rt is None or not rt.buckets:
        return []
    got = {b.cpl: (len(b.peers), sum(1 for p in b.peers if p.connected)) for b in rt.buckets}
    return [(cpl, *got.get(cpl, (0, 0))) for cpl in range(max(got) + 1)]


def bucket_chart(fill: Sequence[tuple[int, int, int]], k: int, width: int, height: int) -> list[Text]:
    """Vertical bars of peers per bucket (connected ones bright at the bottom, the others
    dim above), a y axis from 0 to k and the common-prefix lengths under the bars."""
    if not fill:
        return [Text("nothing to chart yet", style="dim")]
    height = max(3, height)
    chart_h = height - 2  # title row and CPL row
    label_w = len(str(k))
    room = max(1, width - label_w - 1)
    per = max(1, min(4, room // len(fill)))
    bar_w = max(1, per - 1) if per > 1 else 1
    shown = fill[:room // per] if per * len(fill) > room else fill
    title = Text(f"peers per bucket (k={k}) by common-prefix length", style="bold", no_wrap=True)
    if title.cell_len + 13 <= width:
        title.append("  █", style="bold green")
        title.append(" connected")
    title.truncate(width, overflow="ellipsis")
    lines = [title]
    for row in range(chart_h):
        level = (chart_h - 1 - row) * 8
        line = Text(no_wrap=True)
        label = str(k) if row == 0 else ("0" if row == chart_h - 1 else "")
        line.append(label.rjust(label_w) + ("┤" if label else "│"), style="dim")
        for _cpl, n, conn in shown:
            e_all = min(chart_h * 8, round(n / k * chart_h * 8)) if k else 0
            e_all = max(1, e_all) if n else 0
            e_conn = min(e_all, round(conn / k * chart_h * 8)) if k else 0
            e_conn = max(1, e_conn) if conn else 0
            block = BLOCKS[max(0, min(8, e_all - level))]
            style = "bold green" if e_conn - level > 0 else "cyan"
            line.append(block * bar_w, style=style)
            line.append(" " * (per - bar_w))
        lines.append(line)
    axis = Text(" " * label_w + "└", style="dim", no_wrap=True)
    axis.append(x_labels([cpl for cpl, _n, _c in shown], per), style="dim")
    lines.append(axis)
    return lines


def x_labels(values: Sequence[int], per: int) -> str:
    """Numbers under bars `per` cells apart, each where its bar starts, skipped where it
    would touch the previous one."""
    chars = [" "] * (per * len(values))
    free = 0
    for i, v in enumerate(values):
        s, at = str(v), i * per
        if at >= free and at + len(s) <= len(chars):
            chars[at:at + len(s)] = s
            free = at + len(s) + 1
    return "".join(chars)


class BucketChart(Widget):
    """The routing table's buckets as a bar chart (beside the bucket table)."""

    DEFAULT_CSS = "BucketChart { height: 1fr; width: 1fr; }"

    def __init__(self, k: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.k = k
        self.fill: list[tuple[int, int, int]] = []

    def show(self, rt: RoutingTableInfo | None) -> None:
        fill = bucket_fill(rt)
        if fill != self.fill:
            self.fill = fill
            self.refresh()

    def render(self) -> Text:
        return Text("\n").join(bucket_chart(self.fill, self.k, self.size.width, self.size.height))
