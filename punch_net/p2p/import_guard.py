"""Keep py-libp2p's unused transports and services out of a node's memory.

`import libp2p` runs `libp2p/__init__.py`, which imports every transport and service the
library has: QUIC (aioquic), WebTransport, WebSocket (trio-websocket), WebRTC, mDNS
(zeroconf), UPnP (miniupnpc), AutoTLS (httpx, requests), TLS, SECIO (fastecdsa), the
persistent peerstore (sqlite), pubsub, IPNS records (cbor2), observability. That is
~1,250 modules and ~81 MB RSS per interpreter; a Punch node speaks TCP + Noise + Yamux +
Kademlia + identify/ping/AutoNAT/relay v2 and uses none of them. In `punch testnet` every
node is forked from one preloaded interpreter (punch_testnet/zygote.py), and a forked
child's RSS counts every resident page it inherits, so the fork server's imports are paid
by every node.

`install()` puts a finder first on `sys.meta_path` that answers the modules in STUBBED
with an empty stand-in: importing them (and `from X import Y`) succeeds, `Y` is a
placeholder class, and *using* it (calling or instantiating it) raises
StubbedModuleError naming the module (a LAZY module's placeholder loads the real module
instead and forwards the call). `isinstance`/`except` against a placeholder are
simply never true. A HOLLOW package is imported without running its `__init__` (its
submodules still load from disk). Nothing Punch runs touches these names (the whole test suite and a
200-node testnet run with the guard on in the fork server), and a node built with the
guard stays TCP-only (`build_host` passes no QUIC/WebSocket/WebRTC option).

Must run before anything imports libp2p; this module imports nothing from it. The testnet
fork server and the `punch` executable (punch_net/cli/entry.py: it saves 0.4-0.6 s of
every start) install it; PUNCH_IMPORT_GUARD=0 turns it off in both;
tests/scale/test_node_footprint.py checks that the stubbed modules stay out of a started
node and that the node's RSS stays within the issue's bound.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

ENV_FLAG = "PUNCH_IMPORT_GUARD"

# Module prefixes a TCP + Noise + Yamux + Kad node never uses, and why they are loaded.
STUBBED: tuple[str, ...] = (
    "aioquic",  # QUIC transport
    "libp2p.transport.quic",
    "libp2p.transport.webtransport",
    "trio_websocket",  # WebSocket transport
    "libp2p.transport.websocket",
    "libp2p.transport.webrtc",
    "zeroconf",  # mDNS discovery
    "libp2p.discovery.mdns",
    "miniupnpc",  # UPnP port mapping
    "libp2p.discovery.upnp",
    "httpx",  # AutoTLS ACME client
    "requests",
    "OpenSSL",
    "libp2p.peer.persistent",  # sqlite/leveldb peerstores
    "libp2p.pubsub",  # gossipsub/floodsub
    "libp2p.observability",
    "dns",  # dnspython (~100 modules and asyncio), for multiaddr's /dns resolver: see INERT
    # Prometheus: py-libp2p's metrics modules import it (libp2p.network.swarm only uses the plain
    # SwarmEvent class of libp2p.metrics.swarm; nothing creates their Counters), and its
    # resource manager's exporter exists only with enable_prometheus=True, which Punch never
    # passes. Punch's own metrics (--metrics-port) release it (punch_net/runtime.py).
    "prometheus_client",
    "libp2p.rcmgr.prometheus_exporter",
    # trio's DTLS (UDP) channels, imported by trio/__init__ for `trio.DTLSEndpoint`, which
    # nothing outside trio uses (WebRTC would, and it is stubbed above).
    "trio._dtls",
    # Imported by libp2p's package init and `Swarm` but unused by a Noise-only host:
    "libp2p.security.tls",  # TLS 1.3 + AutoTLS
    "cryptography.x509",  # certificates: TLS, QUIC, WebRTC and AutoTLS (imported by libp2p.host.basic_host)
    "libp2p.security.secio",  # SECIO (fastecdsa)
    "libp2p.crypto.ecc",
    "libp2p.security.pnet",  # private networks (PyCryptodome's Salsa20: cffi parses C with pycparser)
    # Loaded on first use instead (LAZY): only a peer with an RSA or secp256k1 key needs them.
    "libp2p.crypto.rsa",  # PyCryptodome (+ cffi/pycparser) and cryptography's serialization
    "libp2p.crypto.secp256k1",  # coincurve
)
# Stubs whose placeholders may be *called* at import time and hand back an inert object
# that fails only when awaited. `libp2p.discovery.bootstrap` builds a multiaddr
# DNSResolver (which builds a dnspython Resolver) when imported; Punch resolves /dns
# addresses itself (punch_net.p2p.addresses.resolve_dns) and gives libp2p IP addresses.
INERT: tuple[str, ...] = ("dns",)
# Stubs that load the real module the first time one of their names is called: py-libp2p
# uses these only as `RSAPublicKey.from_bytes(...)` (a peer's key of that type) and never
# in isinstance checks, so a Punch node (ed25519) skips ~40-60 ms of imports at start and
# still talks to RSA and secp256k1 peers.
LAZY: tuple[str, ...] = ("libp2p.crypto.rsa", "libp2p.crypto.secp256k1")
# Packages whose `__init__` is skipped: the package is an empty module on its real path, so
# its submodules import as usual. `libp2p.kad_dht.kad_dht` imports `libp2p.bitswap.cid`
# (`parse_cid`) and nothing else of Bitswap; the package's `__init__` would import all of
# it (client, decision engines, payment ledger, protobufs: ~3 ms at every start).
HOLLOW: tuple[str, ...] = ("libp2p.bitswap",)


class StubbedModuleError(ImportError):
    """A stubbed module was actually used: Punch must import it for real (remove it from STUBBED)."""


def _refuse(what: str) -> StubbedModuleError:
    return StubbedModuleError(f"{what} is not loaded (punch_net.p2p.import_guard stubs it)")


def _is_inert(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in INERT)


def _lazy_prefix(module: str) -> str | None:
    return next((p for p in LAZY if module == p or module.startswith(p + ".")), None)


def _load_real(module: str, qualname: str) -> Any:
    """The real object a LAZY placeholder stands for (the module is imported now)."""
    prefix = _lazy_prefix(module)
    assert prefix is not None
    release(prefix)
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _Inert:
    """What an INERT placeholder returns when called: anything goes until it is awaited."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(f"{self._what}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _Inert(f"{self._what}()")

    def __await__(self) -> Any:
        raise _refuse(self._what)

    def __bool__(self) -> bool:
        return False


class _Placeholder(type):
    """Metaclass of the stand-in names: a class that refuses to be called (or, in an INERT
    module, returns an inert object)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        what = f"{cls.__module__}.{cls.__qualname__}"
        if _lazy_prefix(cls.__module__) is not None:
            return _load_real(cls.__module__, cls.__qualname__)(*args, **kwargs)
        if _is_inert(cls.__module__):
            return _Inert(f"{what}()")
        raise _refuse(what)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(cls.__module__, f"{cls.__qualname__}.{name}")


def _placeholder(module: str, name: str) -> Any:
    # An Exception subclass, so that `except (Real, Placeholder):` stays legal.
    return _Placeholder(name.rsplit(".", 1)[-1], (Exception,), {"__module__": module, "__qualname__": name})


class StubModule(types.ModuleType):
    """A stand-in package: every attribute is a placeholder, every submodule a stub."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(self.__name__, name)
        setattr(self, name, value)
        return value


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = StubModule(spec.name)
        module.__path__ = []  # a package: `import stub.sub` comes back to the finder
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _HollowLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module, with __path__ from the spec

    def exec_module(self, module: types.ModuleType) -> None:
        return None  # the package's __init__ does not run


class ImportGuard(importlib.abc.MetaPathFinder):
    def __init__(self, prefixes: Sequence[str], hollow: Sequence[str] = ()) -> None:
        self.stubbed: set[str] = set()
        self.hollow = frozenset(hollow)
        self.set_prefixes(prefixes)

    def set_prefixes(self, prefixes: Sequence[str]) -> None:
        self.prefixes = tuple(prefixes)
        # Every import of the process asks this finder first (~900 at a start): one
        # str.startswith over a tuple, not a generator over 25 prefixes (~3 ms of CPU less).
        self._dotted = tuple(p + "." for p in self.prefixes)

    def matches(self, name: str) -> bool:
        return (name + ".").startswith(self._dotted)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.hollow:
            real = importlib.machinery.PathFinder.find_spec(fullname, path)
            if real is None or real.submodule_search_locations is None:
                return None
            spec = importlib.machinery.ModuleSpec(fullname, _HollowLoader(), is_package=True)
            spec.submodule_search_locations = list(real.submodule_search_locations)
            return spec
        if not self.matches(fullname):
            return None
        self.stubbed.add(fullname)
        return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)


def installed() -> ImportGuard | None:
    for finder in sys.meta_path:
        if isinstance(finder, ImportGuard):
            return finder
    return None


def install(prefixes: Sequence[str] = STUBBED, hollow: Sequence[str] = HOLLOW) -> ImportGuard:
    """Stub `prefixes` and hollow out `hollow` from now on (idempotent). Raises RuntimeError
    if one is already imported for real: the guard would then save nothing and hide nothing."""
    guard = installed()
    if guard is not None:
        return guard
    loaded = sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in prefixes) or m in hollow)
    if loaded:
        raise RuntimeError(f"import guard installed too late: {', '.join(loaded[:3])} already imported")
    guard = ImportGuard(prefixes, hollow)
    sys.meta_path.insert(0, guard)
    return guard


def release(*prefixes: str) -> None:
    """Stop stubbing `prefixes` and forget their stand-ins, so the next import loads the real
    modules: a node that turns on mDNS or port mapping (punch_net/reach) pays for zeroconf or
    miniupnpc then, and only then. A no-op without the guard."""
    guard = installed()
    if guard is None:
        return
    guard.set_prefixes([p for p in guard.prefixes if p not in prefixes])
    for name in [m for m, mod in sys.modules.items() if isinstance(mod, StubModule)]:
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            del sys.modules[name]


def wanted() -> bool:
    """The fork server installs the guard unless PUNCH_IMPORT_GUARD=0."""
    return os.environ.get(ENV_FLAG, "1") != "0"


__all__ = ["HOLLOW", "LAZY", "STUBBED", "ImportGuard", "StubModule", "StubbedModuleError", "install", "installed",
           "release", "wanted"]
