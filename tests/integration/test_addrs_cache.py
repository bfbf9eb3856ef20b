"""patches/addrs_cache.py, bug then fix: py-libp2p recomputes `host.get_addrs()` (listen
sockets, the addrs factory, `/p2p/` suffixes) on every call, and every outgoing DHT RPC
makes one; Punch's hosts keep the result until what it is made of changes. In-process
hosts on 127.0.0.1; every wait is bounded."""

from __future__ import annotations

from collections.abc import Sequence

import multiaddr
import trio
from libp2p import new_host
from libp2p.peer.peerstore import env_to_send_in_RPC

from punch_net.p2p.addresses import AdvertisedAddrs
from punch_net.p2p.host import build_host
from punch_net.p2p.identity import new_identity
from punch_net.p2p.patches import addrs_cache

LISTEN = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
OBSERVED = multiaddr.Multiaddr("/ip4/198.18.0.7/tcp/4001")
MAPPED = multiaddr.Multiaddr("/ip4/198.18.0.8/tcp/4002")


class CountingAddrs(AdvertisedAddrs):
    """The advertised addresses, counting how often the host asks for them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        self.calls += 1
        return super().__call__(candidates)


def texts(addrs: Sequence[multiaddr.Multiaddr]) -> list[str]:
    return [str(a).split("/p2p/")[0] for a in addrs]


async def test_bug_plain_host_recomputes_its_addresses_on_every_call() -> None:
    factory = CountingAddrs()
    host = new_host(key_pair=new_identity(), addrs_factory=factory)
    async with host.run([LISTEN]):
        before = factory.calls
        for _ in range(10):
            env_to_send_in_RPC(host)  # what each outgoing DHT RPC does
        assert factory.calls - before >= 10  # (the first also signs a record from a second call)
        await host.close()


async def test_fix_addresses_kept_until_they_change() -> None:
    factory = CountingAddrs()
    host = build_host(new_identity(), addrs=factory)
    assert host.get_addrs() == []  # not listening yet: nothing, and that is not kept
    async with host.run([LISTEN]):
        with trio.fail_after(10):
            first = host.get_addrs()
        assert texts(first) == texts(host.get_transport_addrs()) and str(first[0]).endswith(f"/p2p/{host.get_id()}")
        calls = factory.calls
        for _ in range(10):
            env_to_send_in_RPC(host)
        assert factory.calls == calls  # kept
        mine = host.get_addrs()
        mine.append(OBSERVED)  # each caller gets its own list
        assert host.get_addrs() == first
        factory.set_observed([OBSERVED])  # confirmed observed address: advertised at once
        assert texts(host.get_addrs())[0] == str(OBSERVED)
        factory.set_mapped([MAPPED])  # port mapping: at once
        assert texts(host.get_addrs())[:2] == [str(MAPPED), str(OBSERVED)]
        factory.set_observed([])
        assert texts(host.get_addrs()) == [str(MAPPED), *texts(first)]
        await host.close()


async def test_fix_what_the_key_cannot_see_is_at_most_ttl_old() -> None:
    factory = CountingAddrs()
    host = new_host(key_pair=new_identity(), addrs_factory=factory)
    addrs_cache.install(host, lambda: 0, ttl=0.2)  # a generation that never changes
    async with host.run([LISTEN]):
        host.get_addrs()
        calls = factory.calls
        host.get_addrs()
        assert factory.calls == calls
        await trio.sleep(0.3)
        host.get_addrs()
        assert factory.calls == calls + 1
        await host.close()
