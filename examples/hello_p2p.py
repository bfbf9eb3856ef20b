"""Embed Punch in an app: find a peer of a namespace through the DHT and talk JSON.

Start a network first (in two terminals):
    punch server --port 51820
    punch listener --namespace my-app
Then:
    python examples/hello_p2p.py --bootstrap /ip4/127.0.0.1/tcp/51820 --namespace my-app
"""

from __future__ import annotations

import argparse
import json
import time

import trio

from punch_net.client import P2PClient


async def main(bootstrap: list[str], namespace: str) -> None:
    async with P2PClient(bootstrap=bootstrap, namespace=namespace) as client:
        peer = await client.connect_to_peer()
        print(f"connected to {peer}")
        reply = await client.send_and_wait(
            peer, {"from": "my-app", "message": "Hello!", "timestamp": int(time.time())}
        )
        print("reply:", json.dumps(reply))
        caps = await client.send_command(peer, "capabilities")
        print(f"peer has {caps['cores']} cores, {caps['memory_available'] // 2**20} MiB free")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", action="append", default=None)
    parser.add_argument("--namespace", default="simple-chat")
    args = parser.parse_args()
    trio.run(main, args.bootstrap or ["/ip4/127.0.0.1/tcp/51820"], args.namespace)
