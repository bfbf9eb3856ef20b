"""Bootstrap node: a DHT server that others join through. It needs nothing beyond the
node itself; the relay service is added by the NAT traversal work."""

from __future__ import annotations

import trio

from punch_net.node import Node


async def run_server(node: Node) -> int:
    await trio.sleep_forever()
    return 0
