"""torrent-server / torrent-client end to end, as real `punch` processes on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from punch_harness import PunchFactory, PunchProcess
from torrent_net import TorrentNet as Net
from torrent_net import torrent_net

from punch_net.torrent import PIECE_LENGTH

pytestmark = pytest.mark.slow
SIZES = {"empty": 0, "one-byte": 1, "one-piece": PIECE_LENGTH, "piece-plus-one": PIECE_LENGTH + 1,
         "twenty-mib.bin": 20 * 1024 * 1024 + 12345}
DOWNLOAD_TIMEOUT = 120.0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_files(directory: Path, sizes: dict[str, int], seed: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        (directory / name).write_bytes(os.urandom(size))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with torrent_net(tmp_path_factory.mktemp("torrent")) as n:
        yield n


@pytest.fixture(scope="module")
def shared(net: Net) -> tuple[PunchProcess, dict[str, str], Path]:
    """One torrent server sharing files of every awkward size; name -> info hash."""
    share = net.root / "share"
    make_files(share, SIZES)
    server = net.torrent_server(share)
    hashes = {name: wait_shared(server, name) for name in SIZES}
    return server, hashes, share


def wait_shared(server: PunchProcess, name: str) -> str:
    """The info hash of `name`, once the server has announced it in the DHT."""
    info_hash = str(server.wait_event("shared", pred=lambda e: e["name"] == name, timeout=60)["info_hash"])
    server.wait_event("announced", pred=lambda e: e["info_hash"] == info_hash, timeout=60)
    return info_hash


def test_listing_shows_every_shared_file(net: Net, shared: tuple[PunchProcess, dict[str, str], Path]) -> None:
    _, hashes, _ = shared
    client = net.client("--timeout", "30")
    assert client.wait_exit(60) == 0, client.describe()
    available = {e["name"]: e for e in client.find_events("available")}
    assert set(available) >= set(SIZES), client.describe()
    for name, size in SIZES.items():
        assert available[name]["size"] == size
        assert available[name]["info_hash"] == hashes[name]
        assert available[name]["providers"] >= 1


def test_download_every_size_by_info_hash(net: Net, shared: tuple[PunchProcess, dict[str, str], Path]) -> None:
    _, hashes, share = shared
    clients = {name: net.download(hashes[name], net.root / "dl-sizes", name=f"client-{name}") for name in SIZES}
    for name, client in clients.items():
        assert client.wait_exit(DOWNLOAD_TIMEOUT) == 0, client.describe()
        done = client.wait_event("complete")
        got = net.root / "dl-sizes" / name
        assert done["path"] == str(got)
        assert done["sha256"] == sha256(got) == sha256(share / name)
        progress = client.find_events("progress")
        assert progress and progress[-1]["have"] == progress[-1]["total"] == -(-SIZES[name] // PIECE_LENGTH)
    assert not list((net.root / "dl-sizes").glob("*.part*"))


Shared = tuple[PunchProcess, dict[str, str], Path]


def test_existing_complete_file_is_verified_not_fetched(net: Net, shared: Shared) -> None:
    _, hashes, share = shared
    dest = net.root / "dl-existing"
    dest.mkdir()
    shutil.copy(share / "piece-plus-one", dest / "piece-plus-one")
    client = net.download(hashes["piece-plus-one"], dest)
    assert client.wait_exit(DOWNLOAD_TIMEOUT) == 0, client.describe()
    assert client.wait_event("complete")["downloaded"] == 0
    (dest / "piece-plus-one").write_bytes(b"different")
    client = net.download(hashes["piece-plus-one"], dest)
    assert client.wait_exit(DOWNLOAD_TIMEOUT) == 1
    assert "already exists" in client.wait_event("error")["message"]
    assert (dest / "piece-plus-one").read_bytes() == b"different"  # never overwritten


def test_three_servers_all_serve_pieces(net: Net) -> None:
    data = os.urandom(24 * 1024 * 1024)
    servers = []
    for i in range(3):
        share = net.root / f"share3-{i}"
        share.mkdir()
        (share / "common.bin").write_bytes(data)
        servers.append(net.torrent_server(share, name=f"tserver{i}"))
    ih = {wait_shared(s, "common.bin") for s in servers}
    assert len(ih) == 1
    info_hash = ih.pop()
    client = net.download(info_hash, net.root / "dl-three")
    assert client.wait_exit(DOWNLOAD_TIMEOUT) == 0, client.describe()
    done = client.wait_event("complete")
    assert done["sha256"] == hashlib.sha256(data).hexdigest() == sha256(net.root / "dl-three" / "common.bin")
    ids = {s.peer_id for s in servers}
    assert set(done["from_peers"]) == ids, done["from_peers"]
    assert all(n > 0 for n in done["from_peers"].values())
    assert sum(done["from_peers"].values()) == -(-len(data) // PIECE_LENGTH)


def test_corrupt_peer_is_marked_and_download_completes(net: Net) -> None:
    data = os.urandom(8 * 1024 * 1024)
    shares = []
    for tag in ("honest", "corrupt"):
        share = net.root / f"share-{tag}"
        share.mkdir()
        (share / "c.bin").write_bytes(data)
        shares.append(share)
    # the honest server is slow (~3 MB/s): at full speed it can deliver all 8 MiB before the
    # corrupt one has sent a piece, and then nothing is there to be marked
    honest = net.torrent_server(shares[0], mode="slow", name="honest")
    corrupt = net.torrent_server(shares[1], mode="corrupt", name="corrupt")
    info_hash = wait_shared(honest, "c.bin")
    assert wait_shared(corrupt, "c.bin") == info_hash
    client = net.download(info_hash, net.root / "dl-corrupt")
    assert client.wait_exit(DOWNLOAD_TIMEOUT) == 0, client.describe()
    done = client.wait_event("complete")
    assert done["sha256"] == hashlib.sha256(data).hexdigest() == sha256(net.root / "dl-corrupt" / "c.bin")
    bad = client.find_events("peer_bad")
    assert [e["peer_id"] for e in bad] == [corrupt.peer_id], client.describe()
    assert "SHA-256" in bad[0]["reason"]
    assert set(done["from_peers"]) == {honest.peer_id}


def test_sigkill_mid_download_then_resume(net: Net) -> None:
    data = os.urandom(12 * 1024 * 1024)
    share = net.root / "share-slow"
    share.mkdir()
    (share / "r.bin").write_bytes(data)
    slow = net.torrent_server(share, mode="slow", name="slow")
    info_hash = wait_shared(slow, "r.bin")
    dest = net.root / "dl-resume"
    first = net.download(info_hash, dest, name="client-killed")
    total = -(-len(data) // PIECE_LENGTH)
    first.wait_event("progress", timeout=DOWNLOAD_TIMEOUT, pred=lambda e: e["have"] >= total // 4)
    record = dest / "r.bin.part.resume"
    first.wait_event("progress", timeout=30, pred=lambda e: e["have"] >= total // 4 and record.exists())
    first.kill()
    assert (dest / "r.bin.part").exists() and record.exists() and not (dest / "r.bin").exists()
    second = net.download(info_hash, dest, name="client-resumed")
    assert second.wait_exit(DOWNLOAD_TIMEOUT) == 0, second.describe()
    done = second.wait_event("complete")
    assert done["sha256"] == hashlib.sha256(data).hexdigest() == sha256(dest / "r.bin")
    assert done["resumed"] >= total // 8, done
    assert done["downloaded"] <= (total - done["resumed"] + 8) * PIECE_LENGTH, done  # + endgame duplicates
    assert not record.exists() and not (dest / "r.bin.part").exists()


def test_disk_full_is_a_clear_error_and_progress_is_kept(net: Net, shared: Shared) -> None:
    """RLIMIT_FSIZE makes writes past 4 MiB fail as a full disk would (EFBIG instead of ENOSPC)."""
    _, hashes, share = shared
    name = "twenty-mib.bin"
    dest = net.root / "dl-full"
    dest.mkdir()
    proc = PunchProcess("torrent-client", "--bootstrap", net.boot.addr, "--info-hash", hashes[name],
                        "--download-dir", str(dest), "--no-seed", env=net.f.env, cwd=net.root, name="client-full")
    proc.argv = ["prlimit", f"--fsize={4 * 1024 * 1024}", *proc.argv]
    net.f.procs.append(proc)
    proc.start()
    assert proc.wait_exit(DOWNLOAD_TIMEOUT) == 1, proc.describe()
    message = proc.wait_event("error")["message"]
    assert "cannot write" in message and name in message, message
    assert "Traceback" not in proc.stderr_text()
    assert (dest / f"{name}.part").exists() and not (dest / name).exists()
    again = net.download(hashes[name], dest, name="client-after-full")
    assert again.wait_exit(DOWNLOAD_TIMEOUT) == 0, again.describe()
    assert again.wait_event("complete")["sha256"] == sha256(share / name) == sha256(dest / name)


def test_malicious_metainfo_name_is_refused(net: Net) -> None:
    share = net.root / "share-evil"
    share.mkdir()
    (share / "payload").write_bytes(b"owned")
    evil = net.torrent_server(share, mode="evil-name", name="evil")
    shared = evil.wait_event("shared", timeout=60)
    assert shared["name"] == "../evil-payload"
    evil.wait_event("announced", timeout=60)
    dest = net.root / "dl-evil" / "inner"
    client = net.download(shared["info_hash"], dest, "--timeout", "5")
    assert client.wait_exit(DOWNLOAD_TIMEOUT) == 1, client.describe()
    assert "path separator" in client.wait_event("error")["message"]
    assert [e["peer_id"] for e in client.find_events("peer_bad")] == [evil.peer_id]
    assert not list((net.root / "dl-evil").rglob("*evil*"))
    assert list(dest.iterdir()) == []


def test_bad_input_is_one_line_exit_2(punch: PunchFactory, tmp_path: Path) -> None:
    cases = [
        ("torrent-client", "--info-hash", "xyz", "--ephemeral"),
        ("torrent-client", "--info-hash", "ab" * 32, "--download-dir", str(tmp_path / "nope"), "--ephemeral"),
        ("torrent-server", "--share-dir", str(tmp_path / "nope"), "--ephemeral"),
        ("torrent-server", "--ephemeral"),
    ]
    for argv in cases:
        res = punch.run(*argv)
        assert res.returncode == 2, (argv, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in res.stderr, res.stderr


def test_listing_without_servers_fails_cleanly(net: Net) -> None:
    client = net.client("--timeout", "2")
    assert client.wait_exit(60) == 1 or client.find_events("available")  # other tests' servers may be up
    if not client.find_events("available"):
        assert "no torrent server" in client.wait_event("error")["message"]


def test_download_unknown_info_hash_times_out(net: Net) -> None:
    client = net.download("cd" * 32, net.root / "dl-unknown", "--timeout", "3")
    assert client.wait_exit(60) == 1
    assert "no provider" in client.wait_event("error")["message"]


def test_share_and_download_dirs_from_the_config_file(net: Net) -> None:
    share, dest = net.root / "cfg-share", net.root / "cfg-dl"
    make_files(share, {"from-config.bin": 3 * PIECE_LENGTH + 9}, seed=7)
    dest.mkdir()
    config = net.root / "torrent.toml"
    config.write_text(f"[torrent]\nshare_dir = {str(share)!r}\ndownload_dir = {str(dest)!r}\n")
    server = net.f.start("torrent-server", "--bootstrap", net.boot.addr, "--config", str(config), name="cfg-server")
    info_hash = wait_shared(server, "from-config.bin")
    client = net.client("--config", str(config), "--info-hash", info_hash, "--no-seed", "--timeout", "60",
                        name="cfg-client")
    assert client.wait_exit(DOWNLOAD_TIMEOUT) == 0, client.describe()
    assert client.wait_event("complete")["path"] == str(dest / "from-config.bin")
    assert sha256(dest / "from-config.bin") == sha256(share / "from-config.bin")


def test_torrent_ops_on_the_control_socket(net: Net, shared: Shared) -> None:
    """What `punch-tui --attach` uses: the torrent manager's data and actions over the socket."""
    import trio

    from punch_net.api import NodeError
    from punch_net.ops.control import ControlClient, ControlError
    from punch_net.ops.remote import RemoteNode
    from punch_net.torrent.info import TransferInfo

    server, hashes, share = shared
    name = "one-piece"
    first = hashes[name]
    sock = Path(server.wait_event("control")["path"])
    dest = net.root / "dl-ctl"
    dest.mkdir()
    seeder = net.client("--info-hash", hashes["one-byte"], "--download-dir", str(dest), "--timeout", "60",
                        name="ctl-client")  # stays up, seeding, after its download
    seeder.wait_event("complete", timeout=DOWNLOAD_TIMEOUT)
    client_sock = Path(seeder.wait_event("control")["path"])

    async def server_side() -> None:
        async with ControlClient(sock) as ctl:
            rows = {r["name"]: r for r in await ctl.call("transfers")}
            assert set(rows) >= set(SIZES) and rows[name]["state"] == "seeding", rows.keys()
            await ctl.call("torrent_pause", {"info_hash": first})
            rows = {r["name"]: r for r in await ctl.call("transfers")}
            assert rows[name]["state"] == "paused"
            await ctl.call("torrent_resume", {"info_hash": first})
            assert {r["name"]: r for r in await ctl.call("transfers")}[name]["state"] == "seeding"
            assert await ctl.call("torrent_verify", {"info_hash": first}) == []  # no bad pieces
            for args, code in (({"info_hash": "zz"}, "bad_args"), ({}, "bad_args"),
                               ({"info_hash": "ab" * 32}, "not_found")):
                with pytest.raises(ControlError) as err:
                    await ctl.call("torrent_pause", args)
                assert err.value.code == code, (args, err.value)
            # the seeding client announces itself once its download is done: it shows up in the
            # catalogue (a node lists the others, not itself) within a few rounds
            names: set[str] = set()
            with trio.fail_after(90):
                while "one-byte" not in names:
                    entries = await ctl.call("torrent_catalogue", {"timeout": 5})
                    assert all({"name", "size", "info_hash", "providers"} <= set(e) for e in entries), entries
                    names = {e["name"] for e in entries}
        async with ControlClient(client_sock) as ctl:  # a download started over the socket
            added = hashes["piece-plus-one"]
            assert (await ctl.call("torrent_add", {"info_hash": added}))["info_hash"] == added
            with trio.fail_after(DOWNLOAD_TIMEOUT):
                while True:
                    rows = {r["info_hash"]: r for r in await ctl.call("transfers")}
                    if rows[added]["state"] in ("seeding", "complete"):
                        break
                    if rows[added]["state"] in ("error", "cancelled"):  # say what the node saw
                        seen = await ctl.call("snapshot", {"parts": ["connections", "routing"]})
                        raise AssertionError(f"{rows[added]['error']}; client state: {seen}")
                    await trio.sleep(0.2)
        assert sha256(dest / "piece-plus-one") == sha256(share / "piece-plus-one")

    trio.run(server_side)

    async def attached() -> None:  # the console's own calls, through the attached NodeAPI
        with trio.fail_after(60):
            async with await RemoteNode.connect(sock) as node:
                infos = await node.transfers()
                assert {i.name for i in infos} >= set(SIZES)
                assert all(isinstance(i, TransferInfo) for i in infos)  # peers, piece_sources: typed
                await node.torrent_pause(first)
                assert {i.name: i for i in await node.transfers()}[name].state == "paused"
                await node.torrent_resume(first)
                assert {i.name: i for i in await node.transfers()}[name].state == "seeding"
                with pytest.raises(NodeError):
                    await node.torrent_pause("ab" * 32)

    trio.run(attached)
