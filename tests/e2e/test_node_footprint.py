"""A node's footprint at testnet scale: memory (issue 7: RSS per node <= 60 MB) and the
idle wake-ups that, summed over 200 nodes, used to saturate two cores.

- the import guard (punch_net/p2p/import_guard.py) keeps QUIC/WebSocket/WebRTC/mDNS/UPnP/
  AutoTLS/DNS modules out of a node that still starts, listens and bootstraps;
- a testnet node (forked from the fork server) stays within the RSS bound;
- the connection manager wakes on a connection above `high`, not on a 1 s timer;
- the DHT refresh backs off while nothing changes and comes back on churn.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from punch_net.dht import refresh as dht_refresh
from punch_net.p2p import import_guard
from punch_net.routing.connmgr import ConnManager
from punch_testnet.main import Testnet

RSS_BOUND_MB = 60.0  # the target, per node

GUARDED_NODE = textwrap.dedent("""
    import sys
    from punch_net.p2p import import_guard
    guard = import_guard.install()
    import trio
    from punch_net.config import NodeConfig
    from punch_net.node import Node

    async def main():
        cfg = NodeConfig(role="server", listen_addr="127.0.0.1", port=0, bootstrap=[], ephemeral=True)
        first = Node(cfg)
        second = Node(NodeConfig(role="server", listen_addr="127.0.0.1", port=0, ephemeral=True,
                                 bootstrap=[]))
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await nursery.start(second.run)
            with trio.fail_after(30):
                await second.dial(first.listen_addrs()[0])
                rtt = await second.ping(first.peer_id)
            nursery.cancel_scope.cancel()
        return rtt

    rtt = trio.run(main)
    stubbed = sorted(m for m in sys.modules if isinstance(sys.modules[m], import_guard.StubModule))
    real = sorted(m for m in sys.modules if not isinstance(sys.modules[m], import_guard.StubModule)
                  and guard.matches(m))
    try:
        sys.modules["libp2p.transport.quic.transport"].QUICTransport()
        called = "no error"
    except import_guard.StubbedModuleError as exc:
        called = str(exc)
    for name in ("aioquic", "zeroconf", "miniupnpc", "httpx", "requests", "trio_websocket"):
        if name in sys.modules and not isinstance(sys.modules[name], import_guard.StubModule):
            real.append(name)
    from libp2p.kad_dht.kad_dht import parse_cid  # the one name py-libp2p uses of the hollow libp2p.bitswap
    parse_cid("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    print("BITSWAP", " ".join(sorted(m for m in sys.modules if m.startswith("libp2p.bitswap"))))
    print("RTT", rtt)
    print("STUBBED", " ".join(stubbed))
    print("REAL", " ".join(real))
    print("CALLED", called)
""")


def test_guarded_node_runs_without_the_unused_modules() -> None:
    proc = subprocess.run([sys.executable, "-c", GUARDED_NODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in proc.stdout.splitlines())
    stubbed = set(lines["STUBBED"].split())
    for module in ("dns", "libp2p.transport.quic", "libp2p.transport.websocket", "libp2p.discovery.mdns",
                   "libp2p.discovery.upnp", "prometheus_client", "libp2p.rcmgr.prometheus_exporter", "trio._dtls"):
        assert module in stubbed, f"{module} was not stubbed: {sorted(stubbed)[:20]}"
    # Third-party packages only those stubs import are not loaded at all (or only as stubs).
    assert lines["REAL"] == "", f"guarded modules imported for real: {lines['REAL']}"
    assert "is not loaded" in lines["CALLED"]
    assert lines["BITSWAP"] == "libp2p.bitswap libp2p.bitswap.cid"  # the package's __init__ did not run
    assert float(lines["RTT"]) > 0


def test_guard_refuses_to_install_late() -> None:
    import aioquic  # noqa: F401  (this pytest process imported libp2p, hence aioquic, for real)

    if import_guard.installed() is not None:
        pytest.skip("guard already installed in this process")
    with pytest.raises(RuntimeError, match="too late"):
        import_guard.install()
    assert import_guard.installed() is None


RELEASED = """
from punch_net.p2p import import_guard
import_guard.install()
import libp2p  # noqa: F401  (its __init__ imports the mDNS and UPnP modules: stubs)
import zeroconf
assert isinstance(zeroconf, import_guard.StubModule), "stubbed before release"
import_guard.release("zeroconf", "libp2p.discovery.mdns", "miniupnpc", "libp2p.discovery.upnp")
import zeroconf, miniupnpc
from libp2p.discovery.mdns.mdns import MDNSDiscovery
assert not isinstance(zeroconf, import_guard.StubModule)
assert not isinstance(MDNSDiscovery, import_guard._Placeholder) and callable(miniupnpc.UPnP)
import aioquic
assert isinstance(aioquic, import_guard.StubModule), "the rest stays stubbed"
print("ok")
"""


def test_release_loads_the_real_modules_a_node_turns_on() -> None:
    """mDNS and port mapping (punch_net/reach) release their modules from the guard that
    the `punch` executable installs; before this, the stub made them fail at start."""
    proc = subprocess.run([sys.executable, "-c", RELEASED], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_placeholders_are_inert_only_where_allowed() -> None:
    guard = import_guard.ImportGuard(("fakepkg_strict", "dns"))
    strict = guard.find_spec("fakepkg_strict.sub")
    inert = guard.find_spec("dns.asyncresolver")
    assert strict is not None and inert is not None and guard.find_spec("trio") is None
    strict_mod = strict.loader.create_module(strict)  # type: ignore[union-attr]
    inert_mod = inert.loader.create_module(inert)  # type: ignore[union-attr]
    with pytest.raises(import_guard.StubbedModuleError):
        strict_mod.Thing()
    resolver = inert_mod.Resolver()  # multiaddr builds one at import time
    assert not resolver
    assert issubclass(strict_mod.Error, Exception)  # usable in `except (...)` clauses


async def test_testnet_node_rss_within_bound() -> None:
    net = Testnet(3)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(120):
            await nursery.start(net.run)
            await net.wait_all_up(timeout=90)
        await trio.sleep(1.0)
        with trio.fail_after(60):
            stats = await net.poll_health(timeout=30)
        nursery.cancel_scope.cancel()
    assert len(stats) == 3
    rss = [s.rss_bytes / 2**20 for s in stats]
    assert max(rss) <= RSS_BOUND_MB, f"node RSS {rss} MB above {RSS_BOUND_MB} MB"


def _manager_with(count: int, high: int = 4) -> ConnManager:
    conns = {f"peer{i}": [] for i in range(count)}
    network = SimpleNamespace(get_connections_map=lambda: conns)
    node: Any = SimpleNamespace(host=SimpleNamespace(get_network=lambda: network))
    return ConnManager(node, low=2, high=high)


def test_connection_manager_wakes_only_above_high() -> None:
    quiet = _manager_with(4)
    quiet.connection_opened(None)
    assert not quiet._wake.is_set()
    busy = _manager_with(5)
    busy.connection_opened(None)
    assert busy._wake.is_set()


def test_refresh_backs_off_while_quiet_and_returns_on_churn() -> None:
    base = 120.0
    quiet = {"before": 20, "after": 20, "evicted_clients": 0}
    grew = {"before": 20, "after": 23, "evicted_clients": 0}
    shrank = {"before": 20, "after": 15, "evicted_clients": 0}
    interval = base
    seen = []
    for _ in range(5):
        interval = dht_refresh.next_interval(interval, base, quiet)
        seen.append(interval)
    assert seen == [240.0, 480.0, 600.0, 600.0, 600.0]
    assert dht_refresh.next_interval(600.0, base, grew) == 600.0
    assert dht_refresh.next_interval(600.0, base, shrank) == base
    assert dht_refresh.next_interval(600.0, base, {**quiet, "evicted_clients": 2}) == base


LAZY_KEYS = """
import sys
from punch_net.p2p import import_guard
import_guard.install()
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID
assert isinstance(sys.modules["libp2p.crypto.rsa"], import_guard.StubModule), "rsa loads lazily"
assert "Crypto" not in sys.modules and "coincurve" not in sys.modules
from libp2p.crypto import rsa, secp256k1
for module in (rsa, secp256k1):
    pair = module.create_new_key_pair()  # a placeholder call: the real module loads now
    key = deserialize_public_key(pair.public_key.serialize())  # as a peer's key arrives
    assert key.to_bytes() == pair.public_key.to_bytes() and ID.from_pubkey(key) == ID.from_pubkey(pair.public_key)
assert not isinstance(sys.modules["libp2p.crypto.rsa"], import_guard.StubModule)
print("ok")
"""


def test_lazy_modules_load_when_a_peer_key_needs_them() -> None:
    """RSA and secp256k1 keys (other libp2p implementations' peers) still work: the modules
    the guard keeps out of a start load on the first key of that type."""
    proc = subprocess.run([sys.executable, "-c", LAZY_KEYS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
