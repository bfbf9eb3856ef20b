"""Persistent ed25519 identity, so a node keeps its peer id across restarts.

The key file holds the libp2p protobuf encoding of the private key (the same bytes
go-libp2p's `MarshalPrivateKey` writes), created with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.peer.id import ID

KEY_FILE = "identity.key"


class IdentityError(Exception):
    """The key file exists but cannot be used."""


def new_identity() -> KeyPair:
    return create_new_key_pair()


def load_identity(path: Path) -> KeyPair:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read identity key {path}: {exc.strerror}") from None
    try:
        private = deserialize_private_key(data)
    except Exception:
        raise IdentityError(f"identity key {path} is not a libp2p private key") from None
    if private.get_type() != KeyType.Ed25519:
        raise IdentityError(f"identity key {path} is not an ed25519 key")
    return KeyPair(private, private.get_public_key())


def save_identity(key_pair: KeyPair, path: Path) -> None:
    """Write the key atomically with mode 0600 (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key_pair.private_key.serialize())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_identity(path: Path) -> KeyPair:
    if path.exists():
        return load_identity(path)
    key_pair = new_identity()
    try:
        save_identity(key_pair, path)
    except OSError as exc:
        raise IdentityError(f"cannot write identity key {path}: {exc.strerror}") from None
    return key_pair


def peer_id_of(key_pair: KeyPair) -> ID:
    return ID.from_pubkey(key_pair.public_key)
