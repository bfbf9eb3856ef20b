"""A bootstrap server plus torrent servers (honest, or one of torrent_test_peers.py's
misbehaving modes) and clients, as separate `punch` processes on 127.0.0.1: what the
torrent end-to-end tests share."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from punch_harness import PunchFactory, PunchProcess

HERE = Path(__file__).resolve().parent


class TorrentNet:
    def __init__(self, factory: PunchFactory, root: Path) -> None:
        self.f = factory
        self.root = root
        self.boot = factory.server()

    def torrent_server(self, share: Path, *extra: str, mode: str = "", name: str = "tserver") -> PunchProcess:
        args = ["--bootstrap", self.boot.addr, "--share-dir", str(share), *extra]
        if not mode:
            proc = self.f.start("torrent-server", *args, name=name)
        else:
            proc = PunchProcess("torrent-server", *args, env=self.f.env, cwd=self.root, name=name)
            proc.argv = [sys.executable, str(HERE / "torrent_test_peers.py"), mode, *proc.argv[3:]]
            self.f.procs.append(proc)
            proc.start()
        proc.wait_event("registered", timeout=60)
        return proc

    def share(self, name: str, data: bytes, mode: str = "") -> tuple[PunchProcess, str]:
        """A server (honest, or `mode`) sharing `data` as `name`; (server, info hash) once announced."""
        share = self.root / f"share-{name}-{mode or 'honest'}"
        share.mkdir()
        (share / name).write_bytes(data)
        server = self.torrent_server(share, mode=mode, name=f"{mode or 'honest'}-{name}")
        info_hash = str(server.wait_event("shared", pred=lambda e: e["name"] == name, timeout=60)["info_hash"])
        server.wait_event("announced", pred=lambda e: e["info_hash"] == info_hash, timeout=60)
        return server, info_hash

    def client(self, *extra: str, name: str = "tclient") -> PunchProcess:
        return self.f.start("torrent-client", "--bootstrap", self.boot.addr, *extra, name=name)

    def download(self, info_hash: str, dest: Path, *extra: str, name: str = "tclient") -> PunchProcess:
        """A downloading client; `--timeout 60` (generous: the machine may be busy) unless given."""
        dest.mkdir(parents=True, exist_ok=True)
        timeout = () if "--timeout" in extra else ("--timeout", "60")
        return self.client("--info-hash", info_hash, "--download-dir", str(dest), "--no-seed", *timeout, *extra,
                           name=name)


@contextmanager
def torrent_net(root: Path) -> Iterator[TorrentNet]:
    """A TorrentNet whose processes are stopped (by PID) on exit."""
    factory = PunchFactory(root)
    try:
        yield TorrentNet(factory, root)
    finally:
        factory.close()
