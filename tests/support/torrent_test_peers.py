"""Misbehaving torrent peers for the tests, run as real processes:

    python torrent_test_peers.py corrupt|slow|stall|evil-name  torrent-server --share-dir DIR [punch flags]

`corrupt`: a torrent server whose pieces have one byte flipped (right metainfo, bad data).
`slow`: an honest torrent server that sleeps before every batch of pieces (so a test can
        kill a client mid-download).
`stall`: answers the handshake and the metainfo, then never sends a piece (each read of
        pieces hangs in its worker thread until the process is killed).
`evil-name`: serves, for every shared file, metainfo renamed to `../evil-<name>` (whose
        info hash it announces and prints as a `shared` event), as a hostile peer would.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from punch_net.cli import main as cli
from punch_net.runtime import Runtime
from punch_net.torrent import events as tev
from punch_net.torrent.catalogue import SharedFile
from punch_net.torrent.manager import TorrentManager
from punch_net.torrent.metainfo import Metainfo
from punch_net.torrent.service import Source, TorrentService


class CorruptService(TorrentService):
    def read_batch(self, path: Path, meta: Metainfo, indexes: list[int]) -> list[bytes]:
        out = []
        for data in super().read_batch(path, meta, indexes):
            out.append(bytes([data[0] ^ 0xFF]) + data[1:] if data else data)
        return out


class SlowService(TorrentService):
    def read_batch(self, path: Path, meta: Metainfo, indexes: list[int]) -> list[bytes]:
        time.sleep(0.02 * len(indexes))  # ~3 MB/s
        return super().read_batch(path, meta, indexes)


class StallService(TorrentService):
    def read_batch(self, path: Path, meta: Metainfo, indexes: list[int]) -> list[bytes]:
        while True:
            time.sleep(1.0)


class EvilManager(TorrentManager):
    def _share(self, shared: SharedFile) -> None:
        meta = shared.meta
        evil = Metainfo("../evil-" + meta.name, meta.length, meta.piece_length, meta.pieces)
        self.service.add(Source(evil, shared.path))
        self._provide_info_hash(evil.info_hash, evil.name)
        self.node.bus.publish(tev.Shared(name=evil.name, size=evil.length, info_hash=evil.info_hash_hex))


def main() -> int:
    mode, argv = sys.argv[1], sys.argv[2:]

    def extend(rt: Runtime) -> None:
        """Swap the runtime's torrent manager (or its service) for the misbehaving one."""
        if rt.torrent is None:
            return
        if mode == "evil-name":
            rt.torrent = EvilManager(rt.node, share_dir=rt.config.share_dir, seed=True)
        manager = rt.torrent
        hooks = {"on_error": manager._protocol_error, "on_interested": manager._peer_interested,
                 "addrs_of": manager._addrs_of}
        if mode == "corrupt":  # also as a downloader: it serves garbage from its NAME.part
            manager.service = CorruptService(**hooks)
        elif mode == "slow":
            manager.service = SlowService(**hooks)
        elif mode == "stall":
            manager.service = StallService(**hooks)

    return cli.main(argv, extend=extend)


if __name__ == "__main__":
    sys.exit(main())
