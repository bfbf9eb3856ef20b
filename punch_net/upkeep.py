"""Operational parts every node carries: reputation, capabilities book, metrics, and the
optional services (metrics endpoint, control socket, web console) the fronts switch on.

`attach(node)` runs in `Node.__init__` (cheap, no I/O beyond reading the reputation
file); `run(node)` is started in the node's nursery once it listens, and raises
NodeError (one line) when a service cannot start, e.g. a metrics port in use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from punch_net import events as ev
from punch_net.ops.metrics import NodeMetrics, serve_metrics
from punch_net.routing import capabilities as caps_mod
from punch_net.routing.reputation import open_store

if TYPE_CHECKING:
    from punch_net.node import Node

SAVE_INTERVAL = 30.0
Service = Callable[..., Awaitable[Any]]


def attach(node: Node) -> None:
    cfg = node.config
    node.reputation = open_store(None if cfg.ephemeral else cfg.data_dir, cfg.reputation_half_life)
    node.caps_book = caps_mod.install(node)
    node.metrics = NodeMetrics(node)
    node.reputation.on_record = node.metrics.reputation_event
    node.services = []  # extra long-running services, started by run() with nursery.start


def enable_headless_services(node: Node) -> None:
    """What `punch ROLE` adds: metrics endpoint (if a port is set) and control socket."""
    from punch_net.ops import control

    cfg = node.config
    metrics_port = cfg.metrics_port
    if metrics_port is not None:
        node.services.append(lambda task_status=trio.TASK_STATUS_IGNORED: serve_metrics(
            node, cfg.metrics_host, metrics_port, task_status=task_status))
    if cfg.control:
        node.services.append(lambda task_status=trio.TASK_STATUS_IGNORED: control.serve(
            node, task_status=task_status))
    if cfg.web_port is not None:
        from punch_net.ops import web

        node.services.append(lambda task_status=trio.TASK_STATUS_IGNORED: web.serve(
            node, task_status=task_status))


async def _save_reputation(node: Node) -> None:
    try:
        while True:
            await trio.sleep(SAVE_INTERVAL)
            _save(node)
    finally:
        with trio.CancelScope(shield=True):
            _save(node)


def _save(node: Node) -> None:
    try:
        node.reputation.save()
    except OSError as exc:
        node.bus.publish(ev.ErrorEvent(message=f"cannot save reputation: {exc.strerror}", where="reputation"))


async def run(node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    if node.reputation.load_error:
        node.bus.publish(ev.ErrorEvent(message=node.reputation.load_error, where="reputation"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.metrics.consume_events)
        nursery.start_soon(_save_reputation, node)
        nursery.start_soon(caps_mod.run_announcer, node, node.config.capabilities_interval)
        for service in list(node.services):
            await nursery.start(service)
        task_status.started()
