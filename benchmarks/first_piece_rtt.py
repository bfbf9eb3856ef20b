"""Round trips from the first provider's handshake to the first piece on disk (issue 13).

    .venv/bin/python benchmarks/first_piece_rtt.py [--delays 0.05 0.1 0.2] [--runs 3] [--size-mib 4]

This kernel has no netem, so the torrent-server sits behind tests/support/delay_proxy.py (a
TCP proxy on 127.0.0.1 that delays each byte by DELAY each way: RTT = 2 · DELAY) and
announces the proxy's address (`--announce`): the client finds it through the DHT (the
bootstrap node is reached directly) and every byte between the two goes through the delay.
Per run: `connected` to the server (the handshake done) -> the first block of NAME.part
(polled every 2 ms), in round trips. Loopback CPU time per step is a few ms, so at these
delays the count is the protocol's: streams opened, requests waited for.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from punchproc import PY, PunchProc, first_block_at

PROXY = Path(__file__).resolve().parents[1] / "tests" / "support" / "delay_proxy.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listen_port(pid: int) -> int:
    """The TCP port a process listens on (its --announce hides it from its events)."""
    for _ in range(500):
        ports = [c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
        if ports:
            return int(ports[0])
        time.sleep(0.01)
    raise SystemExit("the torrent-server is not listening")


def one_run(boot: str, info_hash: str, name: str, server_id: str, dest: Path, env: dict[str, str]) -> float:
    dest.mkdir()
    part = dest / (name + ".part")
    client = PunchProc("torrent-client", "--bootstrap", boot, "--info-hash", info_hash, "--download-dir",
                       str(dest), "--no-seed", "--timeout", "60", env=env)
    first = first_block_at(client, part, timeout=120)
    connected = client.wait_timed("connected", timeout=60, pred=lambda e: e.get("peer_id") == server_id)[0]
    client.wait("complete", timeout=120)
    client.stop()
    if not first:
        raise SystemExit("no piece reached the disk")
    return first - connected


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delays", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="one-way delays, seconds")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=4)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    print(f"\n{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.size_mib} MiB, {args.runs} runs per delay\n")
    print("  RTT ms   handshake -> first piece, ms (median, min-max)   in RTTs")
    with tempfile.TemporaryDirectory(prefix="first-piece-") as tmp:
        root = Path(tmp)
        boot = PunchProc("server", env=env)
        procs: list[PunchProc] = [boot]
        proxies: list[subprocess.Popen[str]] = []
        try:
            boot_addr = boot.wait("listening")["addrs"][0]
            for delay in args.delays:
                share = root / f"share{delay}"
                share.mkdir()
                name = f"f{delay}.bin"
                (share / name).write_bytes(os.urandom(args.size_mib << 20))
                proxy_port = free_port()
                server = PunchProc("torrent-server", "--bootstrap", boot_addr, "--share-dir", str(share),
                                   "--announce", f"/ip4/127.0.0.1/tcp/{proxy_port}", env=env)
                procs.append(server)
                server_id = server.wait("listening")["peer_id"]
                proxy = subprocess.Popen([PY, str(PROXY), str(listen_port(server.p.pid)), str(delay), str(proxy_port)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                proxies.append(proxy)
                assert proxy.stdout is not None and int(proxy.stdout.readline()) == proxy_port
                info_hash = server.wait("shared")["info_hash"]
                server.wait("announced", timeout=60)
                times = [one_run(boot_addr, info_hash, name, server_id, root / f"d{delay}-{r}", env)
                         for r in range(args.runs)]
                rtt = 2 * delay
                med = statistics.median(times)
                print(f"  {rtt * 1000:6.0f}   {med * 1000:7.0f} ({min(times) * 1000:.0f}-{max(times) * 1000:.0f})"
                      f"{'':26}{med / rtt:5.2f}")
                server.stop()
        finally:
            for proxy in proxies:
                if proxy.stdin is not None:
                    proxy.stdin.close()
                try:
                    proxy.wait(10)
                except subprocess.TimeoutExpired:
                    proxy.kill()
            for p in procs:
                p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
