"""Data dirs are private (0700, key 0600), and an unwritable data dir, key or config is one
line on stderr and exit 2, never a traceback (issue #14.6). Real `punch` processes.

CI runs as root, where a 0500 directory does not stop anyone: the permission cases run the
child as `nobody` then (and as the current user otherwise); the other cases put the path
under a regular file, which stops root too."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from punch_harness import PunchFactory, dead_port

from punch_net.p2p.identity import new_identity, save_identity

pytestmark = pytest.mark.slow


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A scratch directory that an unprivileged child can reach (pytest's tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="punch-dirs-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody() -> tuple[list[str], Callable[[], None] | None]:
    """How to start this Python as `nobody` when we are root: an argv prefix (setpriv) or a
    preexec_fn; ([], None) when we are not root (then a chmod is real already)."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user to make a permission real")

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    ways: list[tuple[list[str], Callable[[], None] | None]] = [([], drop)]
    setpriv = shutil.which("setpriv")
    if setpriv:  # also works where the interpreter lives under /root (0700)
        ways.insert(0, ([setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"], None))
    for prefix, pre in ways:
        try:
            done = subprocess.run([*prefix, sys.executable, "-c", "import os, punch_net; print(os.geteuid())"],
                                  capture_output=True, text=True, timeout=60, preexec_fn=pre, cwd="/")
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == str(nobody.pw_uid):
            return prefix, pre
    pytest.skip("running as root, and this Python cannot be started as 'nobody' (not reachable for it)")


def run_punch(*args: str, base: Path, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PUNCH_DATA_DIR": str(base / "default-data"), "PUNCH_CONFIG": str(base / "cfg.toml"),
           "HOME": str(base)}
    prefix, pre = _as_nobody() if unprivileged else ([], None)
    argv = [*prefix, sys.executable, "-m", "punch_net.cli", "listener", "--listen-addr", "127.0.0.1", "--port", "0",
            "--bootstrap", f"/ip4/127.0.0.1/tcp/{dead_port()}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd="/",
                          stdin=subprocess.DEVNULL, preexec_fn=pre)


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("punch: error: "), done.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


def test_a_new_data_dir_is_0700_and_its_key_0600(punch: PunchFactory) -> None:
    data = punch.tmp_path / "fresh" / "data"
    proc = punch.start("listener", "--data-dir", str(data), "--bootstrap", f"/ip4/127.0.0.1/tcp/{dead_port()}")
    proc.listening()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "identity-listener.key").stat().st_mode) == 0o600
    key = punch.tmp_path / "keys" / "my.key"
    other = punch.start("listener", "--identity", str(key), "--data-dir", str(data / "2"),
                        "--bootstrap", f"/ip4/127.0.0.1/tcp/{dead_port()}", name="with-identity")
    other.listening()
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.parametrize(("flag", "target", "words"), [
    ("--data-dir", "file/data", ("data dir", "Not a directory")),
    ("--identity", "file/identity.key", ("identity key", "not a directory")),
    ("--config", "file/config.toml", ("config file", "Not a directory")),
])
def test_a_path_under_a_regular_file_is_one_line_and_exit_2(open_dir: Path, flag: str, target: str,
                                                            words: tuple[str, ...]) -> None:
    (open_dir / "file").write_text("not a directory\n")
    done = run_punch(flag, str(open_dir / target), base=open_dir)
    assert_one_line_exit_2(done, *words)


def test_a_read_only_data_dir_is_one_line_and_exit_2(open_dir: Path) -> None:
    data = open_dir / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o555)  # nobody (or we, not root) may not write here
    done = run_punch("--data-dir", str(data), base=open_dir, unprivileged=True)
    assert_one_line_exit_2(done, "cannot write in data dir", str(data), "Permission denied")
    # with its reputation file already there (the reported traceback was on reputation.json)
    data.chmod(0o755)
    (data / "reputation.json").write_text('{"version": 1, "half_life": 3600, "peers": {}}')
    data.chmod(0o555)
    done = run_punch("--data-dir", str(data), base=open_dir, unprivileged=True)
    assert_one_line_exit_2(done, "cannot write in data dir")


def test_an_unreadable_key_is_one_line_and_exit_2(open_dir: Path) -> None:
    data = open_dir / "data"
    data.mkdir()
    data.chmod(0o777)  # writable for the child; only the key is off limits
    save_identity(new_identity(), data / "identity-listener.key")  # 0600, ours
    if os.geteuid() != 0:
        (data / "identity-listener.key").chmod(0o000)
    done = run_punch("--data-dir", str(data), base=open_dir, unprivileged=True)
    assert_one_line_exit_2(done, "cannot read identity key", "Permission denied")


def test_json_mode_says_it_as_one_json_line_too(open_dir: Path) -> None:
    (open_dir / "file").write_text("x")
    done = run_punch("--json", "--data-dir", str(open_dir / "file" / "d"), base=open_dir)
    assert_one_line_exit_2(done, "data dir")
    assert '"fatal": true' in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_config_init_into_an_unwritable_place_is_one_line_and_exit_2(open_dir: Path) -> None:
    (open_dir / "file").write_text("x")
    env = {**os.environ, "PUNCH_DATA_DIR": str(open_dir / "d"), "PUNCH_CONFIG": str(open_dir / "file" / "cfg")}
    for argv in (["config", "init", str(open_dir / "file" / "config.toml")], ["config", "init"]):
        done = subprocess.run([sys.executable, "-m", "punch_net.cli", *argv], capture_output=True, text=True,
                              timeout=60, env=env, cwd="/", stdin=subprocess.DEVNULL)
        assert_one_line_exit_2(done, "cannot write")
