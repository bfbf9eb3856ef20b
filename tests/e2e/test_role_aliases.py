"""`punch torrent_server` / `punch torrent_client` (the seed's binary names) run the
torrent roles: a file shared under one alias is downloaded under the other."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from punch_harness import PunchFactory

pytestmark = pytest.mark.slow


def test_seed_binary_names_share_and_download(punch: PunchFactory, tmp_path: Path) -> None:
    share, dest = tmp_path / "share", tmp_path / "dl"
    share.mkdir()
    dest.mkdir()
    body = os.urandom(300_000)
    (share / "blob.bin").write_bytes(body)
    server = punch.server()
    seeder = punch.start("torrent_server", "--bootstrap", server.addr, "--share-dir", str(share))
    info_hash = str(seeder.wait_event("shared", timeout=60)["info_hash"])
    seeder.wait_event("announced", pred=lambda e: e["info_hash"] == info_hash, timeout=60)
    client = punch.start("torrent_client", "--bootstrap", server.addr, "--info-hash", info_hash,
                         "--download-dir", str(dest), "--no-seed", "--timeout", "60")
    assert client.wait_exit(120) == 0, client.describe()
    done = client.wait_event("complete")
    assert (dest / "blob.bin").read_bytes() == body
    assert done["sha256"] == hashlib.sha256(body).hexdigest()
