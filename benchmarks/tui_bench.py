"""punch-tui responsiveness: key press -> frame rendered, while the node is busy.

    .venv/bin/python benchmarks/tui_bench.py

What runs (all on 127.0.0.1):
- a `punch server` child (bootstrap) and a *sink* child (this file, `--sink`): a Node
  whose `/punch/bench/sink/1.0.0` handler reads and discards everything;
- in this process: PunchApp (headless, 80x24) with its node in trio guest mode, exactly
  as `punch-tui` runs it. The app's node streams to the sink as fast as it can
  (64 KiB writes) while keys are pressed, so trio and Textual share the loop under load.
- the DHT tab is fed 1,000 routing-table rows (real table + synthetic peers, wrapping
  the bridge's snapshot call) and the Messages log receives 100,000 lines (bounded:
  the newest 10,000 are kept).

Baseline in the same run: the same key presses with the node idle and the tables empty.
A "frame" is the compositor update handed to the driver, turned into terminal bytes
(what a real terminal write costs, minus the write). First frame is measured in a fresh
child process from its creation time (imports included). Targets: p95 <= 35 ms under
load, RSS <= 150 MB, first frame <= 1.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SINK_PROTOCOL = "/punch/bench/sink/1.0.0"
ROUTING_ROWS = 1000
LOG_LINES = 100_000
PRESSES = int(os.environ.get("BENCH_TUI_PRESSES", "120"))
TARGET_P95_MS = 35.0
TARGET_RSS_MB = 150.0
TARGET_FIRST_FRAME_S = 1.5
CHUNK = 64 * 1024
KEYS = ["1", "2", "3", "4"]  # tab switches: every press changes what is on screen


# ---------------------------------------------------------------------- children


def run_sink() -> None:
    """Child: a node that swallows streams; prints its address as one JSON line."""
    import trio

    from punch_net.config import NodeConfig
    from punch_net.node import Node
    from punch_net.p2p.helpers import quiet_libp2p_logging

    quiet_libp2p_logging()

    async def main() -> None:
        node = Node(NodeConfig(role="listener", listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True))

        async def swallow(stream: Any) -> None:
            try:
                while True:
                    data = await stream.read(1 << 20)
                    if not data:
                        break
            except Exception:
                pass

        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            node.host.set_stream_handler(SINK_PROTOCOL, swallow)  # type: ignore[arg-type]
            print(json.dumps({"addr": node.listen_addrs()[0], "peer_id": str(node.peer_id)}), flush=True)

    trio.run(main)


def run_first_frame() -> None:
    """Child: start a PunchApp like punch-tui does; print seconds from process creation to first frame."""
    import psutil

    created = psutil.Process().create_time()
    from punch_net.config import NodeConfig
    from punch_tui.app import PunchApp
    from punch_tui.themes import load_themes

    cfg = NodeConfig(role="listener", listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True)
    themes, _ = load_themes()

    class App(PunchApp):
        first: float | None = None

        def _display(self, screen: Any, renderable: Any) -> None:
            super()._display(screen, renderable)
            if renderable is not None and self.first is None:
                render_bytes(self, renderable)
                self.first = time.time()

    async def main() -> None:
        app = App(cfg, themes=themes)
        async with app.run_test(size=(80, 24)) as pilot:
            while app.first is None:
                await pilot.pause(0.01)
            print(json.dumps({"first_frame_s": app.first - created}), flush=True)
            await app.bridge.stop()

    asyncio.run(main())


def render_bytes(app: Any, renderable: Any) -> int:
    """What the driver would write for this frame (headless drivers skip it)."""
    from textual._compositor import CompositorUpdate

    if isinstance(renderable, CompositorUpdate):
        return len(renderable.render_segments(app.console))
    return 0


# ---------------------------------------------------------------------- synthetic load


_SYNTHETIC: list[Any] = []


def synthetic_routing(real: Any, n: int) -> Any:
    """The real routing table plus synthetic peers (made once), `n` rows in all; a few
    synthetic peers are 'seen' again at each call, like a live table."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from punch_net.api import RoutingBucket, RoutingPeer, RoutingTableInfo

    rng = random.Random(7)
    now = time.time()
    if not _SYNTHETIC:
        for _ in range(n):
            pid = str(ID.from_pubkey(create_new_key_pair(rng.randbytes(32)).public_key))
            cpl = min(12, int(rng.expovariate(1.0)))
            _SYNTHETIC.append(RoutingPeer(pid, cpl, now - rng.uniform(0, 7200), rng.random() < 0.1, "punch/0.1.0",
                                          [f"/ip4/10.{rng.randrange(256)}.{rng.randrange(256)}.1/tcp/4001"]))
    for i in random.sample(range(len(_SYNTHETIC)), 5):
        p = _SYNTHETIC[i]
        _SYNTHETIC[i] = RoutingPeer(p.peer_id, p.cpl, now, p.connected, p.agent, p.addrs)
    peers = [p for b in (real.buckets if real else []) for p in b.peers]
    peers += _SYNTHETIC[: max(0, n - len(peers))]
    by_cpl: dict[int, list[Any]] = {}
    for p in peers:
        by_cpl.setdefault(p.cpl, []).append(p)
    return RoutingTableInfo(size=len(peers), buckets=[RoutingBucket(c, ps) for c, ps in sorted(by_cpl.items())],
                            mode=real.mode if real else "server", last_refresh=now)


def log_events(start: int, n: int) -> list[Any]:
    """`n` message/reply events, as the node would publish them (made batch by batch)."""
    from punch_net import events as ev

    peer = "12D3KooWRfpyZhXK5exR8uPckhBcXkiYBpbGBKAZHxBTDBvrchSR"
    out: list[Any] = []
    for i in range(start, start + n // 2):
        out.append(ev.MessageSent(peer_id=peer, id=f"b-{i}", command="message", args={"text": f"bench {i}"}))
        out.append(ev.Reply(peer_id=peer, id=f"b-{i}", ok=True, result={"echo": f"bench {i}"}, rtt_ms=1.0))
    return out


# ---------------------------------------------------------------------- measurement


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def measure(app: Any, pilot: Any, presses: int) -> list[float]:
    """Press tab keys; time each from the key event to the first frame showing that tab."""
    from textual import events
    from textual.widgets import TabbedContent

    tabs = app.query_one("#tabs", TabbedContent)
    names = ["overview", "dht", "connections", "messages"]
    samples: list[float] = []
    loop = asyncio.get_running_loop()
    for i in range(presses):
        key = KEYS[(i + 1) % len(KEYS)]
        want = names[int(key) - 1]
        fut: asyncio.Future[float] = loop.create_future()
        app.frame_waiter = (want, tabs, fut)
        t0 = time.perf_counter()
        app.post_message(events.Key(key, key))
        try:
            t1 = await asyncio.wait_for(fut, 5.0)
        except TimeoutError:
            t1 = time.perf_counter()
            failure = getattr(getattr(app, "bridge", None), "failure", None)
            print(f"  (press {i}: no frame within 5 s; screen {type(app.screen).__name__}, active {tabs.active}, "
                  f"node failure {failure!r})", file=sys.stderr)
            if type(app.screen).__name__ != "Screen":
                raise SystemExit(f"the app left its main screen ({type(app.screen).__name__}); "
                                 f"node failure: {failure!r}") from None
        samples.append((t1 - t0) * 1000)
        await asyncio.sleep(random.uniform(0.01, 0.04))  # a fast typist, not a flood
    app.frame_waiter = None
    if os.environ.get("BENCH_TUI_BY_TAB"):
        for k, n in enumerate(names):
            sub = [x for i, x in enumerate(samples) if (i + 1) % len(KEYS) == k]
            print(f"  -> {n:<12} p50 {statistics.median(sub):6.1f}  p95 {pct(sub, 0.95):6.1f}  max {max(sub):6.1f}",
                  file=sys.stderr)
    return samples


def events_key(key: str) -> Any:
    from textual import events

    return events.Key(key, key)


class GcWatch:
    """Collector pauses while measuring (full collections were the worst stalls)."""

    def __init__(self) -> None:
        import gc

        self.pauses: list[tuple[int, float]] = []
        self._t = 0.0
        self._gc = gc

    def __enter__(self) -> GcWatch:
        self._gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        self._gc.callbacks.remove(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._t) * 1000))

    def summary(self) -> str:
        full = [d for g, d in self.pauses if g == 2]
        return (f"{len(self.pauses)} collections, {sum(d for _, d in self.pauses):.0f} ms in all; "
                f"{len(full)} full, longest {max(full, default=0):.0f} ms")


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


async def bench(server_addr: str, sink: dict[str, str]) -> dict[str, Any]:
    from punch_net.config import NodeConfig
    from punch_tui.app import PunchApp
    from punch_tui.bridge import LocalBridge
    from punch_tui.messages import NodeEvents
    from punch_tui.themes import load_themes

    load_routing = {"on": False}
    real_snapshot = LocalBridge._snapshot

    async def snapshot(self: LocalBridge, api: Any) -> Any:
        snap = await real_snapshot(self, api)
        if load_routing["on"]:
            import dataclasses

            snap = dataclasses.replace(snap, routing=synthetic_routing(snap.routing, ROUTING_ROWS))
        return snap

    LocalBridge._snapshot = snapshot  # type: ignore[method-assign]

    class App(PunchApp):
        frame_waiter: Any = None
        frames = 0

        def _display(self, screen: Any, renderable: Any) -> None:
            super()._display(screen, renderable)
            if renderable is None:
                return
            render_bytes(self, renderable)
            self.frames += 1
            w = self.frame_waiter
            if w is not None and w[1].active == w[0] and not w[2].done():
                w[2].set_result(time.perf_counter())

    cfg = NodeConfig(role="listener", listen_addr="127.0.0.1", port=0, bootstrap=[server_addr], ephemeral=True,
                     namespace="tui-bench")
    themes, _ = load_themes()
    app = App(cfg, themes=themes)
    results: dict[str, Any] = {}
    async with app.run_test(size=(80, 24)) as pilot:
        while not app.bridge.running:
            await pilot.pause(0.05)
        await pilot.pause(1.0)
        idle = await measure(app, pilot, PRESSES)
        results["idle"] = idle
        results["rss_idle"] = rss_mb()

        # load: 1,000 routing rows, 100,000 log lines, a full-speed stream to the sink
        load_routing["on"] = True
        t0 = time.perf_counter()
        batch = 500
        for i in range(0, LOG_LINES, batch):
            app.post_message(NodeEvents(log_events(i, batch)))
            if i % 5_000 == 0:
                await pilot.pause(0)
        await pilot.pause(0.5)
        results["log_fill_s"] = time.perf_counter() - t0
        results["log_kept"] = app.tab("messages").log_view.count
        results["log_appended"] = app.tab("messages").log_view.appended

        assert isinstance(app.bridge, LocalBridge) and app.bridge.runtime is not None
        node = app.bridge.runtime.node  # the load generator needs a raw libp2p stream, not the API
        stop = {"flag": False}
        sent = {"bytes": 0, "t0": 0.0, "t1": 0.0}

        async def blast() -> None:
            import trio
            from libp2p.custom_types import TProtocol
            from libp2p.peer.id import ID

            await node.dial(sink["addr"])
            stream = await node.host.new_stream(ID.from_base58(sink["peer_id"]), [TProtocol(SINK_PROTOCOL)])
            chunk = b"\x00" * CHUNK
            sent["t0"] = time.perf_counter()
            try:
                while not stop["flag"]:
                    await stream.write(chunk)
                    sent["bytes"] += CHUNK
                    await trio.lowlevel.checkpoint()
            finally:
                sent["t1"] = time.perf_counter()
                await stream.close()

        if os.environ.get("BENCH_TUI_NO_STREAM"):  # diagnosis: tables and log only
            stop["flag"] = True
        transfer = asyncio.ensure_future(app.bridge.call(blast))
        while sent["bytes"] < 8 * CHUNK and not transfer.done() and not stop["flag"]:
            await asyncio.sleep(0.05)
        if transfer.done():
            transfer.result()  # raise the reason the transfer could not start
        app.post_message(events_key("2"))
        for _ in range(100):  # let the 1,000-row table land
            await pilot.pause(0.1)
            if app.query_one("#dht-peers").row_count >= ROUTING_ROWS:
                break
        dht_rows = app.query_one("#dht-peers").row_count
        with GcWatch() as gcw:
            busy = await measure(app, pilot, PRESSES)
        results["gc"] = gcw.summary()
        stop["flag"] = True
        await asyncio.wait_for(transfer, 10)
        results["busy"] = busy
        results["dht_rows"] = dht_rows
        results["rss_busy"] = rss_mb()
        results["throughput_mb_s"] = sent["bytes"] / max(1e-9, sent["t1"] - sent["t0"]) / 1e6
        results["frames"] = app.frames
        await app.bridge.stop()
    return results


async def bench_plain() -> list[float]:
    """Machine baseline: a bare Textual app (four static tabs, no node, no trio), same presses."""
    from textual.app import App, ComposeResult
    from textual.widgets import Footer, Static, TabbedContent, TabPane

    names = ["overview", "dht", "connections", "messages"]

    class Plain(App[None]):
        frame_waiter: Any = None
        BINDINGS = [(k, f"show('{n}')", n) for k, n in zip(KEYS, names, strict=True)]  # noqa: RUF012

        def compose(self) -> ComposeResult:
            with TabbedContent(id="tabs"):
                for n in names:
                    with TabPane(n, id=n):
                        yield Static(f"{n}\n" * 10)
            yield Footer()

        def action_show(self, name: str) -> None:
            self.query_one("#tabs", TabbedContent).active = name

        def _display(self, screen: Any, renderable: Any) -> None:
            super()._display(screen, renderable)
            if renderable is None:
                return
            render_bytes(self, renderable)
            w = self.frame_waiter
            if w is not None and w[1].active == w[0] and not w[2].done():
                w[2].set_result(time.perf_counter())

    app = Plain()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.5)
        return await measure(app, pilot, PRESSES)


def start_child(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            text=True, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        return proc, json.loads(line)
    except ValueError:
        proc.kill()
        raise SystemExit(f"child {argv[2:4]} did not start: {line!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-frame", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        run_sink()
        return 0
    if args.first_frame:
        run_first_frame()
        return 0

    from punch_net.p2p.helpers import quiet_libp2p_logging

    quiet_libp2p_logging()
    children: list[subprocess.Popen[str]] = []
    try:
        first = []
        for _ in range(3):
            proc, out = start_child([sys.executable, __file__, "--first-frame"])
            children.append(proc)
            proc.wait(30)
            first.append(float(out["first_frame_s"]))
        server, srv = start_child([sys.executable, "-m", "punch_net.cli", "server", "--listen-addr", "127.0.0.1",
                                   "--port", "0", "--ephemeral", "--json"])
        children.append(server)
        sink_proc, sink = start_child([sys.executable, __file__, "--sink"])
        children.append(sink_proc)
        plain = asyncio.run(bench_plain())
        res = asyncio.run(bench(str(srv["addrs"][0]), sink))
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)

    idle, busy = res["idle"], res["busy"]
    rows = [
        ("key→frame, bare Textual app, 4 static tabs (machine baseline)", plain, ""),
        ("key→frame, node idle, empty tables (baseline)", idle, ""),
        (f"key→frame, {ROUTING_ROWS} DHT rows, {LOG_LINES:,} log lines, stream at "
         f"{res['throughput_mb_s']:.0f} MB/s", busy, f"target p95 ≤ {TARGET_P95_MS:g} ms"),
    ]
    print(f"\npunch-tui benchmark (80x24 headless, {PRESSES} tab-switch key presses per row)\n")
    print(f"{'scenario':<78} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for name, values, note in rows:
        print(f"{name:<78} {statistics.median(values):7.1f} {pct(values, 0.95):7.1f} {max(values):7.1f}  {note}")
    print()
    print(f"DHT table rows shown:     {res['dht_rows']}")
    print(f"log lines appended/kept:  {res['log_appended']:,} / {res['log_kept']:,} "
          f"(filled in {res['log_fill_s']:.2f} s)")
    print(f"GC during busy presses:   {res['gc']}")
    print(f"stream throughput:        {res['throughput_mb_s']:.1f} MB/s during the busy run")
    print(f"RSS idle / busy:          {res['rss_idle']:.0f} MB / {res['rss_busy']:.0f} MB "
          f"(target ≤ {TARGET_RSS_MB:g} MB)")
    print(f"first frame (3 cold starts, from process creation): "
          f"{', '.join(f'{f:.2f}' for f in first)} s (target ≤ {TARGET_FIRST_FRAME_S:g} s)")
    ok = (pct(busy, 0.95) <= TARGET_P95_MS and res["rss_busy"] <= TARGET_RSS_MB
          and statistics.median(first) <= TARGET_FIRST_FRAME_S)
    print("\nall targets met" if ok else "\nsome targets missed (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
