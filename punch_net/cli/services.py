"""What `punch ROLE` adds to a node for its operators: the metrics endpoint (if a port is
set), the control socket (punch-tui --attach, scripts) and the web console (which
attaches a console to that socket)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio
from trio_typing import TaskStatus

from punch_net.ops import control, web
from punch_net.runtime import Runtime


def enable_headless_services(rt: Runtime) -> None:
    cfg = rt.config
    publish = rt.node.bus.publish
    if cfg.metrics_port is not None and rt.metrics is not None:
        from punch_net.ops.metrics import serve_metrics  # only here: prometheus_client (runtime.py)

        rt.add_service(partial(serve_metrics, rt.metrics, rt.node.bus.publish, cfg.metrics_host, cfg.metrics_port))
    if not cfg.control:
        return
    socket_path: list[Path] = []

    async def run_control(*, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            path = await nursery.start(partial(control.serve, rt.api, data_dir=cfg.data_dir, publish=publish,
                                               path=cfg.control_socket))
            if path is not None:
                socket_path.append(path)
            task_status.started()

    rt.add_service(run_control)
    if web.plan(cfg) is not None:  # the monitor's by default; --web-port PORT for any role
        async def run_web(*, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(web.serve, cfg, socket_path[0] if socket_path else None, publish))
                task_status.started()

        rt.add_service(run_web)
