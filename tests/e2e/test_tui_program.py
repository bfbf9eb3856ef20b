"""The console as a program: `punch-tui` started as a process with bad input, and the
themes found again after a regular (wheel) install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_themes_are_found_after_a_regular_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel carries themes/ as data files under share/punch/themes, where themes_dir()
    looks when there is no themes/ beside the package (a non-editable install)."""
    import subprocess
    import sys
    import zipfile

    import punch_tui.themes as themes_mod

    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                          "-w", str(tmp_path / "wheel"), str(repo)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("punch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.rsplit("/", 1)[-1] for n in names if "/data/share/punch/themes/" in n}
    assert shipped == {p.name for p in (repo / "themes").glob("*.toml")}, names

    prefix = tmp_path / "prefix"
    (prefix / "share" / "punch" / "themes").mkdir(parents=True)
    monkeypatch.delenv("PUNCH_THEMES_DIR", raising=False)
    monkeypatch.setattr(themes_mod, "__file__", str(tmp_path / "site-packages" / "punch_tui" / "themes.py"))
    assert themes_mod.themes_dir(prefix) == prefix / "share" / "punch" / "themes"


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    """Bad flags and an unknown theme: one line on stderr, exit 2, terminal untouched."""
    env = {**os.environ, "PUNCH_CONFIG": str(tmp_path / "c.toml")}
    for args, needle in ((["--role", "nope"], "invalid choice"), (["--theme", "sparkly"], "unknown theme"),
                         (["--bootstrap", "/ip4/1.2.3/tcp/x"], "error")):
        res = subprocess.run([sys.executable, "-m", "punch_tui.main", *args], capture_output=True, text=True,
                             timeout=60, env=env, stdin=subprocess.DEVNULL)
        assert res.returncode == 2, res
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "Traceback" not in res.stderr
