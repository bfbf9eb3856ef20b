"""Listener: joins the DHT, announces itself under a namespace and answers commands."""

from __future__ import annotations

import time

from punch_net import events as ev
from punch_net.node import Node

REPROVIDE_INTERVAL = 6 * 60 * 60.0  # py-libp2p provider records live 24 h
RETRY_INTERVAL = 2.0


async def keep_providing(node: Node, namespace: str) -> None:
    """Provide the namespace key, again on every bootstrap reconnection (the bootstrap
    node may have restarted and lost our record) and before the record expires."""
    await node.bootstrapped.wait()
    # Retried every 2 s (a peer to store the record may appear any moment), but said once,
    # then now and then with the count: a node alone is not news every 2 s.
    repeats = ev.RepeatLimiter(gap=30.0)
    while True:
        epoch = node.bootstrap_epoch
        if await node.provide_namespace(namespace):
            wait = REPROVIDE_INTERVAL
            repeats.clear(namespace)
        else:
            count = repeats.hit(namespace, time.monotonic())
            if count is not None:
                node.bus.publish(ev.ErrorEvent(message=f"could not announce {namespace!r} yet; "
                                               f"retrying every {RETRY_INTERVAL:g}s",
                                               where="provide", repeats=count))
            wait = RETRY_INTERVAL
        if node.bootstrap_epoch == epoch:
            await node.wait_bootstrap_change(wait)


async def run_listener(node: Node) -> int:
    await keep_providing(node, node.config.namespace)
    return 0
