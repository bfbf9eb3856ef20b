"""`P2PClient`: make an application peer-to-peer in a few lines.

    async with P2PClient(bootstrap=["/ip4/127.0.0.1/tcp/51820"], namespace="my-app") as c:
        peer = await c.connect_to_peer()
        reply = await c.send_and_wait(peer, {"message": "Hello!"})

The client is a node without a role (punch_net/runtime.py composes it like any other):
it joins the DHT, and everything else happens when you call it; `client.api` is the same
NodeAPI the console uses (punch_net/api.py). Register your own commands with `@client.command("name")` to answer
peers, and `announce=True` to be findable under the namespace yourself.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import trio
from libp2p.peer.peerinfo import PeerInfo

from punch_net.api import NodeError
from punch_net.config import NodeConfig
from punch_net.messaging.commands import CommandRegistry, Handler
from punch_net.roles.listener import keep_providing
from punch_net.runtime import Runtime


class P2PClient:
    def __init__(
        self,
        bootstrap: list[str],
        namespace: str = "simple-chat",
        *,
        listen_addr: str = "127.0.0.1",
        port: int = 0,
        announce: bool = False,
        timeout: float = 10.0,
        config: NodeConfig | None = None,
    ) -> None:
        cfg = config or NodeConfig(role="client", ephemeral=True)
        cfg.bootstrap = list(bootstrap)
        cfg.namespace = namespace
        cfg.listen_addr = listen_addr
        cfg.port = port
        if config is None:
            cfg.dht_mode = "server" if announce else "client"
        self.namespace = namespace
        self.announce = announce
        self.timeout = timeout
        self.registry = CommandRegistry()
        self.runtime = Runtime(cfg, registry=self.registry)
        self.node = self.runtime.node
        self.api = self.runtime.api
        self._nursery_cm: Any = None
        self._nursery: trio.Nursery | None = None

    def command(self, name: str) -> Any:
        """Decorator: answer command `name` from peers with this async handler."""
        return self.registry.command(name)

    def register(self, name: str, handler: Handler) -> None:
        self.registry.register(name, handler)

    @property
    def peer_id(self) -> str:
        return str(self.node.peer_id)

    async def __aenter__(self) -> P2PClient:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        try:
            await self._nursery.start(self.runtime.run)
            with trio.fail_after(self.timeout):
                await self.node.bootstrapped.wait()
            if self.announce:
                self._nursery.start_soon(keep_providing, self.node, self.namespace)
        except BaseException as exc:
            await self.__aexit__(None, None, None)
            if isinstance(exc, trio.TooSlowError):
                raise NodeError(f"no bootstrap node answered within {self.timeout:g}s") from None
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._nursery is None:
            return None
        self._nursery.cancel_scope.cancel()
        nursery_cm, self._nursery = self._nursery_cm, None
        # Stop the node without handing the nursery the body's exception, so that
        # exception reaches the caller as itself, not wrapped in an ExceptionGroup.
        await nursery_cm.__aexit__(None, None, None)
        return None

    async def find_peers(self, timeout: float | None = None) -> list[str]:
        """Peer ids announcing our namespace (through the DHT)."""
        return [str(p.peer_id) for p in await self.node.find_peers(self.namespace, timeout)]

    async def connect_to_peer(self, timeout: float | None = None) -> str:
        """Find a peer of the namespace through the DHT, connect, and return its id."""
        deadline = time.monotonic() + (timeout or self.timeout)
        wait = 0.2
        errors = ["no peer announces the namespace yet"]
        while time.monotonic() < deadline:
            peer = await self._connect_first(deadline - time.monotonic(), errors)
            if peer is not None:
                return peer
            await trio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            wait = min(wait * 2, 2.0)
        raise NodeError(f"no peer of {self.namespace!r} reachable: {errors[-1]}")

    async def _connect_first(self, timeout: float, errors: list[str]) -> str | None:
        """One lookup; dial each peer as it is named, and stop at the first connection."""
        connected: list[str] = []
        async with trio.open_nursery() as nursery:
            async def connect(info: PeerInfo) -> None:
                try:
                    await self.node.connect_peer(info)
                except NodeError as exc:
                    errors.append(str(exc))
                    return
                connected.append(str(info.peer_id))
                nursery.cancel_scope.cancel()  # one is enough: stop the lookup and other dials

            await self.node.find_peers(self.namespace, timeout, on_peer=lambda info: nursery.start_soon(connect, info))
        return connected[0] if connected else None

    async def send_and_wait(
        self, peer: str, message: dict[str, Any], timeout: float | None = None
    ) -> Any:
        """Send a JSON message and return the reply's result.

        `message["command"]` picks the command (default "message"); the rest are its args.
        Raises CommandFailed when the peer answers with an error.
        """
        args = dict(message)
        command = str(args.pop("command", "message"))
        return await self.node.send_command(peer, command, args, timeout)

    async def send_command(
        self, peer: str, command: str, args: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        return await self.node.send_command(peer, command, args, timeout)

    async def send_to_best(
        self, command: str, args: dict[str, Any] | None = None, timeout: float | None = None,
    ) -> Any:
        """Send to the best node of our namespace: weighted score of CPU, memory, disk,
        latency and reputation (weights from the config), randomised in proportion to the
        score, failing over to the next node. Returns a RouteResult (`.peer_id`, `.result`,
        `.attempts`, `.candidates` with each score's parts); raises NoCandidates."""
        return await self.runtime.selector.send_to_best(self.namespace, command, args, timeout=timeout)
