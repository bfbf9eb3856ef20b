"""Namespace and content keys in the DHT, compatible with every libp2p implementation.

A namespace key is the CIDv1 (raw codec) of sha2-256 over the UTF-8 namespace, so any
libp2p node finds Punch peers with a plain `findProviders(cid)`.
"""

from __future__ import annotations

import hashlib

from libp2p.bitswap.cid import compute_cid_v1_obj

SHA2_256 = b"\x12\x20"  # multihash prefix: sha2-256, 32 bytes


def namespace_multihash(namespace: str) -> bytes:
    return SHA2_256 + hashlib.sha256(namespace.encode("utf-8")).digest()


def digest_multihash(digest: bytes) -> bytes:
    """The multihash of an existing sha2-256 digest (e.g. a torrent info hash)."""
    if len(digest) != 32:
        raise ValueError("a sha2-256 digest is 32 bytes")
    return SHA2_256 + digest


def dht_key(multihash: bytes) -> str:
    """The form py-libp2p's provide/find_providers accept: a hex multihash."""
    return multihash.hex()


def namespace_cid(namespace: str) -> str:
    """The CID text users and other implementations see (base32, `bafkrei…`)."""
    return compute_cid_v1_obj(namespace.encode("utf-8")).encode("base32").decode()
