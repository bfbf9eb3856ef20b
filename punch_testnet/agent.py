"""Commands a `punch testnet` controller uses to watch and drive its nodes.

They exist only in processes started with PUNCH_TESTNET=1 (set by `punch testnet` for
its children), never on a normal node: `testnet.provide/find/refresh` make the node do
DHT work for the caller. The controller reaches them over the child's stdin/stdout
(`serve_stdin`: one JSON request per line in, one `control_reply` event per line out),
not over libp2p, so watching a network adds no connections or load to it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from trio_typing import TaskStatus

from punch_net.dht import refresh as dht_refresh
from punch_net.dht.keys import dht_key, namespace_multihash
from punch_net.errors import NodeError
from punch_net.messaging.codec import Request
from punch_net.messaging.commands import Call, CommandError
from punch_net.p2p.patches.kad_lookup_tracing import trace_lookup

if TYPE_CHECKING:
    from punch_net.node import Node
    from punch_net.routing.connmgr import ConnManager
    from punch_net.runtime import Runtime

ENV_FLAG = "PUNCH_TESTNET"
MAX_KEY_LEN = 256
MAX_FIND_TIMEOUT = 30.0
MAX_LINE = 64 * 1024
CONTROLLER = "controller"  # the caller id stdin requests carry


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


def compose(rt: Runtime) -> None:
    """Add the testnet commands and the stdin control loop to a node (the testnet's
    children only: `punch_testnet.child`, the zygote)."""
    if not enabled():
        return
    register(rt.node, rt.connmgr)
    rt.add_service(lambda task_status=trio.TASK_STATUS_IGNORED: _serve(rt.node, task_status))


async def _serve(node: Node, task_status: TaskStatus[None]) -> None:
    task_status.started()
    await serve_stdin(node)


def register(node: Node, cm: ConnManager) -> None:
    """Add the testnet commands to the node's registry."""
    reg = node.registry

    async def stats(call: Call) -> dict[str, Any]:
        conns = node.connected_peers()
        others = [p for p in conns if str(p) != call.peer_id]
        return {
            "peer_id": str(node.peer_id),
            "role": node.config.role,
            "pid": os.getpid(),
            "connections": len(others),
            "routing_table_size": node.dht.get_routing_table_size(),
            "bootstrapped": node.bootstrapped.is_set(),
            "rss": rss_bytes(),
            "uptime_s": round(time.time() - node.started_at, 1),
            "connmgr": cm.stats(),
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
        count = call.request.args.get("count", 20)
        if not isinstance(count, int) or not 1 <= count <= 100:
            raise CommandError("bad_args", "'count' must be an integer in [1, 100]")
        detail = call.request.args.get("trace", False) is True
        found: list[Any] = []
        lag: list[float] = []
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            if detail:
                nursery.start_soon(_loop_lag, lag)
            with trace_lookup(detail) as trace, trio.move_on_after(timeout):
                found = await node.dht.find_providers(key, count)
            ms = (time.perf_counter() - start) * 1000
            nursery.cancel_scope.cancel()
        providers = sorted({str(p.peer_id) for p in found})
        result = {
            "providers": providers,
            "ms": round(ms, 2),
            "hops": trace.found_at if trace.queries or trace.found_at is not None else 0,
            "queries": trace.queries,
        }
        if detail:
            result["steps"] = trace.steps
            result["lag_max_ms"] = round(max(lag, default=0.0), 1)
            result["lag_total_ms"] = round(sum(lag), 1)
        return result

    async def refresh(call: Call) -> dict[str, Any]:
        result = await dht_refresh.refresh(node, max_age=0)  # asked for: every region, however recent
        reprovided = 0
        for raw in list(node.dht.provider_store.providing_keys):
            with trio.move_on_after(MAX_FIND_TIMEOUT):
                reprovided += bool(await node.dht.provide(raw.hex()))
        result["reprovided"] = reprovided
        return result

    async def ping(call: Call) -> dict[str, Any]:
        """libp2p ping to another node (dialing it first if needed): the one-hop floor."""
        peer = call.request.args.get("peer")
        if not isinstance(peer, str) or not 30 <= len(peer) <= 100:
            raise CommandError("bad_args", "'peer' must be a peer id")
        addrs = call.request.args.get("addrs", [])

        try:
            peer_id = ID.from_base58(peer)
            if addrs and not node.host.get_network().get_connections(peer_id):
                await node.connect_peer(PeerInfo(peer_id, [multiaddr.Multiaddr(a) for a in addrs[:4]]))
            rtt = await node.ping(peer_id)
        except (NodeError, ValueError) as exc:
            raise CommandError("ping_failed", str(exc)) from None
        return {"ms": round(rtt * 1000, 3)}

    reg.register("testnet.stats", stats)
    reg.register("testnet.ping", ping)
    reg.register("testnet.provide", provide)
    reg.register("testnet.find", find)
    reg.register("testnet.refresh", refresh)


LAG_TICK = 0.005


async def _loop_lag(out: list[float]) -> None:
    """How late this node's event loop wakes a 5 ms sleeper (ms past due, one entry per
    tick above 1 ms): time a traced lookup spent waiting for the CPU or for other tasks."""
    while True:
        due = time.perf_counter() + LAG_TICK
        await trio.sleep(LAG_TICK)
        late = (time.perf_counter() - due) * 1000
        if late > 1.0:
            out.append(late)


def _reply(req_id: Any, ok: bool, result: Any = None, error: str = "") -> None:
    line = {"event": "control_reply", "id": req_id, "ok": ok}
    if ok:
        line["result"] = result
    else:
        line["error"] = error
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


async def _dispatch(node: Node, raw: bytes) -> None:
    try:
        msg = json.loads(raw)
        req_id, command, args = msg["id"], msg["command"], msg.get("args", {})
        if not isinstance(command, str) or not isinstance(args, dict):
            raise ValueError("command must be a string and args an object")
    except (ValueError, KeyError, TypeError) as exc:
        _reply(None, False, error=f"bad control request: {exc}")
        return
    handler = node.registry.get(command)
    if handler is None or not command.startswith("testnet."):
        _reply(req_id, False, error=f"unknown control command {command!r}")
        return
    try:
        result = await handler(Call(CONTROLLER, Request(str(req_id), command, args)))
    except CommandError as exc:
        _reply(req_id, False, error=f"{exc.code}: {exc}")
    except Exception as exc:
        _reply(req_id, False, error=f"{type(exc).__name__}: {exc}")
    else:
        _reply(req_id, True, result)


async def serve_stdin(node: Node) -> None:
    """Answer control requests read from stdin; when stdin closes the controller is gone
    (even if it was SIGKILLed), so this node stops too."""
    if not enabled():
        return
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(MAX_LINE)
            if not chunk:  # the controller is gone: stop like on SIGTERM (clean shutdown)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            buf += chunk
            if len(buf) > MAX_LINE and b"\n" not in buf:
                buf = b""  # a runaway line: drop it rather than grow without bound
                continue
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    node.spawn(_dispatch, node, line)
