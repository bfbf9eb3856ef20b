"""Config: defaults < file < flags; the written default parses back; atomic writes."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from punch_net.cli.main import build_parser, config_from_args
from punch_net.config import (
    DEFAULT_BOOTSTRAP,
    ConfigError,
    NodeConfig,
    apply_config,
    atomic_write,
    default_config_path,
    default_config_text,
    read_config_file,
    update_config_file,
)


def test_defaults_follow_the_seed() -> None:
    cfg = NodeConfig(role="server")
    assert cfg.effective_port() == 51820 and cfg.is_dht_server()
    listener = NodeConfig(role="listener")
    assert listener.effective_port() == 0 and listener.bootstrap == [DEFAULT_BOOTSTRAP]
    assert listener.namespace == "simple-chat"
    dialer = NodeConfig(role="dialer")
    assert not dialer.is_dht_server() and dialer.message == "Hello from dialer!" and dialer.interval == 2.0
    assert NodeConfig(role="dialer", dht_mode="server").is_dht_server()
    assert not NodeConfig(role="server", dht_mode="client").is_dht_server()
    assert NodeConfig(role="x", data_dir=Path("/d")).identity_path() == Path("/d/identity-x.key")
    assert NodeConfig(identity=Path("/k")).identity_path() == Path("/k")


def test_default_config_text_is_valid_commented_toml(tmp_path: Path) -> None:
    text = default_config_text()
    data = tomllib.loads(text)
    assert {"node", "dialer", "tui"} <= set(data)
    assert sum(line.startswith("#") for line in text.splitlines()) >= 10
    path = tmp_path / "c.toml"
    path.write_text(text)
    cfg = apply_config(NodeConfig(), read_config_file(path))
    assert cfg.namespace == "simple-chat" and cfg.bootstrap == [DEFAULT_BOOTSTRAP]


def test_apply_config_types(tmp_path: Path) -> None:
    cfg = apply_config(NodeConfig(), {"node": {"port": 4001, "dial_timeout": 3, "data_dir": "~/x",
                                               "bootstrap": ["/ip4/1.2.3.4/tcp/1"]},
                                      "dialer": {"interval": 0.5, "message": "hi"}})
    assert cfg.port == 4001 and cfg.dial_timeout == 3 and cfg.interval == 0.5 and cfg.message == "hi"
    assert cfg.data_dir == Path("~/x").expanduser()
    for bad in ({"port": "80"}, {"port": True}, {"bootstrap": "/ip4/1.2.3.4/tcp/1"}, {"bootstrap": [1]},
                {"dial_timeout": "3"}, {"namespace": 5}):
        with pytest.raises(ConfigError, match="wrong type"):
            apply_config(NodeConfig(), {"node": bad})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[nodes]\nport = 1\n", "unknown section"),
        ("[node]\nprot = 1\n", "unknown key"),
        ("port = 1\n", "unknown section"),
        ("[node\n", "not valid TOML"),
    ],
)
def test_read_config_file_rejects(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_config_file(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "nope.toml")


def test_flags_override_file_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[node]\nport = 4001\nnamespace = "file"\n[dialer]\ninterval = 9.0\nmessage = "m"\n')
    args = build_parser().parse_args(["dialer", "--config", str(path), "--namespace", "flag", "--count", "2"])
    cfg = config_from_args(args, "dialer")
    assert (cfg.port, cfg.namespace, cfg.interval, cfg.message, cfg.count) == (4001, "flag", 9.0, "m", 2)
    assert cfg.role == "dialer"
    server = config_from_args(build_parser().parse_args(["server"]), "server")
    assert server.bootstrap == []  # the server bootstraps nowhere unless told


def test_atomic_write_leaves_no_temp_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "f.toml"
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["f.toml"]


def test_update_config_file_keeps_other_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[node]\nnamespace = "keep"\n')
    update_config_file(path, "tui", "theme", "punch-light")
    data = tomllib.loads(path.read_text())
    assert data == {"node": {"namespace": "keep"}, "tui": {"theme": "punch-light"}}


def test_punch_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$PUNCH_CONFIG is the config file itself (issue 15: a theme switch made cfg.toml/config.toml)."""
    from punch_net.cli.main import main as cli_main

    path = tmp_path / "cfg.toml"
    monkeypatch.setenv("PUNCH_CONFIG", str(path))
    assert default_config_path() == path
    assert cli_main(["config", "init"]) == 0  # `punch config init` writes $PUNCH_CONFIG
    assert path.is_file() and "[node]" in path.read_text()
    update_config_file(default_config_path(), "tui", "theme", "punch-light")
    assert path.is_file() and tomllib.loads(path.read_text())["tui"] == {"theme": "punch-light"}
    assert sorted(os.listdir(tmp_path)) == ["cfg.toml"]  # no folder, no temp file left
    monkeypatch.delenv("PUNCH_CONFIG")
    assert default_config_path().name == "config.toml"
