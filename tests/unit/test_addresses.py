"""Multiaddrs as users type them: with or without /p2p/, dns4, and the bad ones."""

from __future__ import annotations

import argparse

import multiaddr
import pytest

from punch_net.flag_types import port, positive, positive_int
from punch_net.p2p.addresses import (
    AddressError,
    expand_unspecified,
    listen_multiaddr,
    parse_dial_target,
    resolve_dns,
    short_peer_id,
)

PEER = "12D3KooWQ5dRkFC2zEVL2RVTamp3xmEi1LPc5vg5KkK4MTeHUY14"


def test_with_and_without_peer_id() -> None:
    bare = parse_dial_target("/ip4/127.0.0.1/tcp/51820")
    assert bare.peer_id is None and str(bare) == "/ip4/127.0.0.1/tcp/51820"
    full = parse_dial_target(f" /ip4/127.0.0.1/tcp/51820/p2p/{PEER} ")
    assert str(full.peer_id) == PEER and str(full.addr) == "/ip4/127.0.0.1/tcp/51820"
    assert str(full) == f"/ip4/127.0.0.1/tcp/51820/p2p/{PEER}"
    assert parse_dial_target("/dns4/localhost/tcp/1").peer_id is None
    assert parse_dial_target("/ip6/::1/tcp/1/p2p/" + PEER).peer_id is not None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("127.0.0.1:51820", "malformed"),
        ("/ip4/127.0.0.1/tcp/notaport", "malformed"),
        ("/ip4/999.0.0.1/tcp/1", "malformed"),
        ("", "unsupported|malformed"),
        ("/ip4/127.0.0.1/udp/1", "unsupported"),
        ("/ip4/127.0.0.1", "unsupported"),
        ("/ip4/127.0.0.1/tcp/0", "port 0"),
        (f"/p2p/{PEER}/ip4/127.0.0.1/tcp/1", "must come last|unsupported"),
        (f"/ip4/1.2.3.4/tcp/1/p2p/{PEER}/p2p-circuit/p2p/{PEER}", "relay|last"),
        ("/ip4/127.0.0.1/tcp/1/p2p/notapeerid", "malformed|invalid peer id"),
    ],
)
def test_rejected_with_one_line(text: str, match: str) -> None:
    with pytest.raises(AddressError, match=match) as info:
        parse_dial_target(text)
    assert "\n" not in str(info.value)


def test_resolve_dns_localhost() -> None:
    addrs = resolve_dns(parse_dial_target("/dns4/localhost/tcp/4001"))
    assert multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001") in addrs
    ip = parse_dial_target("/ip4/10.0.0.1/tcp/1")
    assert resolve_dns(ip) == [ip.addr]
    with pytest.raises(AddressError, match="cannot resolve"):
        resolve_dns(parse_dial_target("/dns4/no-such-host.invalid/tcp/1"))


def test_expand_unspecified_never_advertises_0000() -> None:
    out = [str(a) for a in expand_unspecified([multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/5")])]
    assert out and "/ip4/127.0.0.1/tcp/5" in out and not any("0.0.0.0" in a for a in out)
    assert out[-1] == "/ip4/127.0.0.1/tcp/5"  # loopback last
    same = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/5")]
    assert expand_unspecified(same) == same


def test_listen_multiaddr() -> None:
    assert str(listen_multiaddr("::1", 3)) == "/ip6/::1/tcp/3"
    with pytest.raises(AddressError):
        listen_multiaddr("not an ip", 3)


def test_short_peer_id() -> None:
    assert short_peer_id(PEER) == "12D3…MTeHUY14"
    assert short_peer_id("short") == "short"


def test_cli_types() -> None:
    assert port("0") == 0 and port("65535") == 65535
    assert positive("0.5") == 0.5 and positive_int("3") == 3
    for fn, text in ((port, "65536"), (port, "-1"), (port, "x"), (positive, "0"), (positive, "nan?"),
                     (positive_int, "1.5"), (positive_int, "0")):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)


def test_is_peer_id_wants_a_whole_id() -> None:
    from punch_net.p2p.addresses import is_peer_id

    ed25519 = "12D3KooWRfpyZhXK5exR8uPckhBcXkiYBpbGBKAZHxBTDBvrchSR"
    assert is_peer_id(ed25519) and is_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
    # any base58 decodes, and "12D3KooWRfpy" even is a valid (identity) multihash
    assert not any(is_peer_id(ed25519[:n]) for n in range(1, len(ed25519)))
    assert not is_peer_id("") and not is_peer_id("/ip4/127.0.0.1/tcp/1") and not is_peer_id("hello")
