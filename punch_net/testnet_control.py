"""Commands a `punch testnet` controller uses to watch and drive its nodes.

`testnet.stats` is read-only. `testnet.provide`, `testnet.find` and `testnet.refresh`
make the node do DHT work for the caller, so they exist only in processes started with
PUNCH_TESTNET=1 (set by `punch testnet` for its children), never on a normal node.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import trio

from punch_net import dht_hygiene
from punch_net.discovery import dht_key, namespace_multihash
from punch_net.messaging.commands import Call, CommandError

if TYPE_CHECKING:
    from punch_net.node import Node

ENV_FLAG = "PUNCH_TESTNET"
MAX_KEY_LEN = 256
MAX_FIND_TIMEOUT = 30.0


def enabled() -> bool:
    return os.environ.get(ENV_FLAG) == "1"


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0


def _key(call: Call) -> str:
    key = call.request.args.get("key")
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LEN:
        raise CommandError("bad_args", f"'key' must be a string of 1..{MAX_KEY_LEN} characters")
    return dht_key(namespace_multihash(key))


def register(node: Node) -> None:
    """Add the testnet commands to the node's registry (only with PUNCH_TESTNET=1)."""
    if not enabled():
        return
    reg = node.registry

    async def stats(call: Call) -> dict[str, Any]:
        conns = node.connected_peers()
        others = [p for p in conns if str(p) != call.peer_id]
        cm = getattr(node, "connmgr", None)
        return {
            "peer_id": str(node.peer_id),
            "role": node.config.role,
            "pid": os.getpid(),
            "connections": len(others),
            "routing_table_size": node.dht.get_routing_table_size(),
            "bootstrapped": node.bootstrapped.is_set(),
            "rss": rss_bytes(),
            "uptime_s": round(time.time() - node.started_at, 1),
            "connmgr": cm.stats() if cm is not None else None,
            "dial_errors": node.counters.dial_errors,
        }

    async def provide(call: Call) -> dict[str, Any]:
        key = _key(call)
        start = time.perf_counter()
        with trio.move_on_after(MAX_FIND_TIMEOUT):
            ok = bool(await node.dht.provide(key))
            return {"ok": ok, "ms": round((time.perf_counter() - start) * 1000, 2)}
        return {"ok": False, "ms": round((time.perf_counter() - start) * 1000, 2)}

    async def find(call: Call) -> dict[str, Any]:
        key = _key(call)
        timeout = call.request.args.get("timeout", 10.0)
        if not isinstance(timeout, int | float) or not 0 < timeout <= MAX_FIND_TIMEOUT:
            raise CommandError("bad_args", f"'timeout' must be a number in (0, {MAX_FIND_TIMEOUT:g}]")
        found: list[Any] = []
        start = time.perf_counter()
        with dht_hygiene.trace_lookup() as trace, trio.move_on_after(timeout):
            found = await node.dht.find_providers(key)
        ms = (time.perf_counter() - start) * 1000
        providers = sorted({str(p.peer_id) for p in found})
        return {
            "providers": providers,
            "ms": round(ms, 2),
            "hops": trace.found_at if trace.queries or trace.found_at is not None else 0,
            "queries": trace.queries,
        }

    async def refresh(call: Call) -> dict[str, Any]:
        result = await dht_hygiene.refresh(node)
        reprovided = 0
        for raw in list(node.dht.provider_store.providing_keys):
            with trio.move_on_after(MAX_FIND_TIMEOUT):
                reprovided += bool(await node.dht.provide(raw.hex()))
        result["reprovided"] = reprovided
        return result

    reg.register("testnet.stats", stats)
    reg.register("testnet.provide", provide)
    reg.register("testnet.find", find)
    reg.register("testnet.refresh", refresh)
