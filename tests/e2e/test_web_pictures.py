"""The monitor's web view (textual-serve running the attached console) shows the same
pictures: the live plots on the Overview, and after `7` then `m` the crawled network as a
picture, in headless Chromium driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tui_net import Child, free_port

from punch_tui.format import short_id

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Page:
    """One Chromium tab over DevTools; `text` is everything the console's websocket sent."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seq = 0
        self.frames: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.frames)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.seq += 1
        mine = self.seq
        await self.ws.send_json({"id": mine, "method": method, "params": params})
        while True:
            msg = json.loads((await asyncio.wait_for(self.ws.receive(), 30)).data)
            if msg.get("method") == "Network.webSocketFrameReceived":
                frame = msg["params"]["response"]
                data = frame.get("payloadData", "")
                self.frames.append(base64.b64decode(data).decode(errors="replace") if frame.get("opcode") == 2
                                   else data)
            if msg.get("id") == mine:
                return dict(msg.get("result") or {})

    async def wait_for(self, words: list[str], timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while not all(w in self.text for w in words):
            assert time.monotonic() < end, f"never reached the browser: {[w for w in words if w not in self.text]}"
            await asyncio.sleep(0.5)
            await self.call("Runtime.evaluate", expression="1")  # pumps the frame events

    async def type(self, key: str) -> None:
        await self.call("Input.insertText", text=key)

    async def screenshot(self, path: Path) -> None:
        png = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(png["data"]))


async def in_chromium(url: str, tmp: Path, peers: set[str]) -> None:
    import aiohttp

    profile = tempfile.mkdtemp(prefix="punch-chromium-")
    proc = subprocess.Popen(["chromium", *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--window-size=1280,800", "about:blank"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ws_url = ""
        deadline = time.monotonic() + 30
        while not ws_url:
            assert time.monotonic() < deadline and proc.poll() is None, "chromium did not open its DevTools port"
            line = await asyncio.to_thread(proc.stderr.readline)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            ws_url = m.group(1) if m else ""
        stderr = proc.stderr
        threading.Thread(target=lambda: [None for _ in stderr], daemon=True).start()
        port = int(ws_url.split(":")[2].split("/")[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                target = next(t for t in await resp.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Network.enable")
                await page.call("Page.navigate", url=url)
                await page.wait_for(["Overview", "traffic in", "┤", "-5m", "now"])
                await page.screenshot(tmp / "web-overview.png")
                for kind in ("mousePressed", "mouseReleased"):  # focus the terminal, then type
                    await page.call("Input.dispatchMouseEvent", type=kind, x=300, y=400, button="left", clickCount=1)
                await page.type("7")
                await page.wait_for(["DHT lookup", "Map/table"])
                await page.type("m")
                await page.wait_for(["links", *(short_id(p, 12) for p in peers)])
                await page.screenshot(tmp / "web-map.png")
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make system-deps)")
def test_monitor_web_view_shows_plots_and_the_network_picture(tmp_path: Path) -> None:
    env = {"PUNCH_DATA_DIR": str(tmp_path / "server"), "PUNCH_CONFIG": str(tmp_path / "config.toml")}
    children: list[Child] = []

    def start(role: str, name: str, *args: str) -> Child:
        child = Child(role, *args, cwd=tmp_path, env={**env, "PUNCH_DATA_DIR": str(tmp_path / name)})
        children.append(child)
        return child

    try:
        server = start("server", "server")
        listeners = [start("listener", f"l{i}", "--bootstrap", server.addr) for i in range(2)]
        monitor = start("monitor", "monitor", "--bootstrap", server.addr, "--crawl-interval", "2",
                        "--web-port", str(free_port()), "--web-host", "127.0.0.1")
        url = str(monitor.wait("web", 60)["url"])
        everyone = {server.peer_id, *(lst.peer_id for lst in listeners)}

        def crawled_all() -> bool:
            return any(e.get("event") == "crawl" and e.get("alive", 0) >= len(everyone) for e in monitor.events)

        deadline = time.monotonic() + 90
        while not crawled_all():
            assert time.monotonic() < deadline, f"the monitor never saw every node: {monitor.events[-3:]}"
            time.sleep(0.5)
        asyncio.run(in_chromium(url, tmp_path, everyone))
    finally:
        for child in reversed(children):
            child.stop()
