"""ed25519 identity: persisted with mode 0600, stable across loads, bad files rejected."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_pair

from punch_net.p2p.identity import (
    IdentityError,
    load_identity,
    load_or_create_identity,
    new_identity,
    peer_id_of,
    save_identity,
)


def test_created_once_then_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "identity.key"
    first = load_or_create_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_identity(path)
    assert peer_id_of(first) == peer_id_of(again)
    assert str(peer_id_of(first)).startswith("12D3KooW")  # ed25519 peer ids
    assert not list(path.parent.glob("*.tmp"))


def test_save_overwrites_atomically_keeping_0600(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"old")
    path.chmod(0o644)
    kp = new_identity()
    save_identity(kp, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert peer_id_of(load_identity(path)) == peer_id_of(kp)


def test_fresh_identities_differ() -> None:
    assert peer_id_of(new_identity()) != peer_id_of(new_identity())


def test_garbage_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(IdentityError, match="not a libp2p private key"):
        load_or_create_identity(path)


def test_unreadable_key(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="cannot read"):
        load_identity(tmp_path)  # a directory
    with pytest.raises(IdentityError, match="cannot read"):
        load_identity(tmp_path / "missing")


def test_wrong_key_type(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(secp256k1_pair().private_key.serialize())
    with pytest.raises(IdentityError, match="not an ed25519"):
        load_identity(path)


def test_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(IdentityError, match="cannot write"):
        load_or_create_identity(blocker / "identity.key")
