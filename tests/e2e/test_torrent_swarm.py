"""The swarm, on a rig of network namespaces whose uplinks are limited with tc tbf
(swarm_rig.py): downloaders started together trade pieces before any of them completes,
a downloader that serves corrupt pieces is banned without harming any file, and one that
freezes mid-download does not hold the seed's pieces from the others."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nat_harness import Punch, is_kind
from swarm_rig import BOOT_IP, BOOT_PORT, SwarmRig, swarm_unavailable_reason

pytestmark = pytest.mark.slow
PEERS = str(Path(__file__).parents[1] / "support" / "torrent_test_peers.py")
MIB = 1024 * 1024
START = 90.0  # a loaded 2-core box can take tens of seconds to start Python + libp2p


@pytest.fixture
def make_swarm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[int, float], SwarmRig]]:
    reason = swarm_unavailable_reason()
    if reason:
        pytest.skip(f"swarm rig unavailable: {reason}")
    rigs: list[SwarmRig] = []
    tag = "".join(ch for ch in request.node.name if ch.isalnum())[-5:]

    def make(hosts: int, rate_mbit: float) -> SwarmRig:
        rig = SwarmRig(prefix=f"ps{os.getpid() % 10000}{tag}{len(rigs)}_", hosts=hosts, rate_mbit=rate_mbit,
                       log_dir=tmp_path)
        rigs.append(rig)
        rig.__enter__()
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            rig.close()


def node_args(boot_id: str) -> list[str]:
    return ["--listen-addr", "0.0.0.0", "--port", "4001", "--ephemeral", "--no-port-mapping",
            "--bootstrap", f"/ip4/{BOOT_IP}/tcp/{BOOT_PORT}/p2p/{boot_id}"]


def start_boot(rig: SwarmRig, tmp: Path) -> str:
    boot = Punch(rig, "boot", "boot", ["server", "--listen-addr", "0.0.0.0", "--no-port-mapping",
                                       "--port", str(BOOT_PORT), "--data-dir", str(tmp / "boot")])
    return boot.peer_id


def start_seeder(rig: SwarmRig, boot_id: str, share: Path, name: str) -> str:
    seeder = Punch(rig, "h0", "seeder", ["torrent-server", *node_args(boot_id), "--share-dir", str(share)])
    info_hash = str(seeder.wait_for(is_kind("shared", name=name), START, "shared")["info_hash"])
    seeder.wait_for(is_kind("announced", info_hash=info_hash), START, "announced")
    return info_hash


def seeded(rig: SwarmRig, tmp: Path, name: str, size: int) -> tuple[Path, str, str]:
    """A bootstrap node and a seeder of a random file `name`: (share dir, boot id, info hash)."""
    share = tmp / "share"
    share.mkdir()
    (share / name).write_bytes(os.urandom(size))
    boot_id = start_boot(rig, tmp)
    return share, boot_id, start_seeder(rig, boot_id, share, name)


def downloader(rig: SwarmRig, host: str, boot_id: str, info_hash: str, dest: Path, mode: str = "") -> Punch:
    args = ["torrent-client", *node_args(boot_id), "--info-hash", info_hash, "--download-dir", str(dest),
            "--timeout", "60"]
    dest.mkdir(parents=True, exist_ok=True)
    # torrent_test_peers.py MODE ARGV…: the same client with a misbehaving service
    return Punch(rig, host, host, args, program=[sys.executable, PEERS, mode] if mode else None)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_downloaders_trade_pieces_before_any_completes(make_swarm: Callable[[int, float], SwarmRig],
                                                      tmp_path: Path) -> None:
    """1 seeder + 4 downloaders, 16 MiB, every uplink 4 MB/s: the seeder alone would need
    16 s for four copies; the first downloader to finish got pieces from another downloader."""
    rig = make_swarm(5, 32)
    share, boot_id, info_hash = seeded(rig, tmp_path, "swarm.bin", 16 * MIB)
    clients = [downloader(rig, f"h{i}", boot_id, info_hash, tmp_path / f"dl{i}") for i in range(1, 5)]
    ids = {c.peer_id: c for c in clients}
    done = {c.name: c.wait_for(is_kind("complete"), 120, "complete") for c in clients}
    first = min(done.values(), key=lambda e: e["_t"])
    # from_peers counts verified pieces per sender. Every other downloader completed after
    # `first` did, so whatever they sent it, they sent while still downloading themselves.
    from_downloaders = {pid: n for pid, n in first["from_peers"].items() if pid in ids}
    assert sum(from_downloaders.values()) > 0, (first, {c.name: done[c.name]["from_peers"] for c in clients})
    want = sha256(share / "swarm.bin")
    for i, c in enumerate(clients, start=1):
        assert done[c.name]["sha256"] == want == sha256(tmp_path / f"dl{i}" / "swarm.bin")
    span = max(e["_t"] for e in done.values()) - min(c.started for c in clients)
    print(f"swarm of 4 done in {span:.1f}s (seeder alone: 16 s); pieces from downloaders: "
          + ", ".join(f"{c.name}: {sum(n for p, n in done[c.name]['from_peers'].items() if p in ids)}"
                      for c in clients))


def test_downloader_serving_corrupt_pieces_is_banned(make_swarm: Callable[[int, float], SwarmRig],
                                                    tmp_path: Path) -> None:
    """A downloader whose service flips a byte of every piece it serves joins first; the
    honest downloaders that ask it for pieces ban it, and every file still matches."""
    rig = make_swarm(4, 24)
    share, boot_id, info_hash = seeded(rig, tmp_path, "c.bin", 12 * MIB)
    bad = downloader(rig, "h1", boot_id, info_hash, tmp_path / "bad", mode="corrupt")
    bad.wait_for(lambda e: e.get("event") == "progress" and e["have"] >= 8, START, "the corrupt peer's first pieces")
    honest = [downloader(rig, f"h{i}", boot_id, info_hash, tmp_path / f"dl{i}") for i in (2, 3)]
    bad_id = bad.peer_id
    done = [c.wait_for(is_kind("complete"), 120, "complete") for c in honest]
    marked = [e for c in honest for e in c.kinds("peer_bad") if e["peer_id"] == bad_id]
    assert marked, [c.kinds("peer_bad") for c in honest]
    assert all("SHA-256" in e["reason"] for e in marked), marked
    want = sha256(share / "c.bin")
    for i, e in zip((2, 3), done, strict=True):
        assert e["sha256"] == want == sha256(tmp_path / f"dl{i}" / "c.bin")
        assert not e["from_peers"].get(bad_id), e  # nothing it sent was kept
    # the corrupt peer's own download is honest (it only serves garbage)
    assert bad.wait_for(is_kind("complete"), 120, "complete")["sha256"] == want


def test_a_frozen_downloader_does_not_hold_pieces_from_the_others(make_swarm: Callable[[int, float], SwarmRig],
                                                                 tmp_path: Path) -> None:
    """Two downloaders fetch from a spreading seed; one is SIGSTOPped mid-download (its
    connections stay open and silent). What the seed offered it and nobody else may take
    while it spreads must reach the other downloader well before the seed's idle timeout
    (120 s; the other's --timeout 60 would end it first). Here the frozen one's queue at
    the seed drains into the socket buffers, so its unrequested offers going stale (3 s)
    is what frees them (this passed before spreader.STALL_TICKS too); a queue that cannot
    drain is the unit test's case (test_spreader.py)."""
    rig = make_swarm(3, 16)
    share, boot_id, info_hash = seeded(rig, tmp_path, "f.bin", 16 * MIB)
    frozen, live = (downloader(rig, f"h{i}", boot_id, info_hash, tmp_path / f"dl{i}") for i in (1, 2))
    for c in (frozen, live):
        c.wait_for(lambda e: e.get("event") == "progress" and e["have"] >= 16, START, "the first pieces")
    pid = frozen.proc.popen.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        done = live.wait_for(is_kind("complete"), 90, "complete")
        took = done["_t"] - stopped
        assert done["sha256"] == sha256(share / "f.bin") == sha256(tmp_path / "dl2" / "f.bin")
        assert took < 60, took
        print(f"completed {took:.1f}s after the other downloader froze")
    finally:
        os.kill(pid, signal.SIGCONT)
