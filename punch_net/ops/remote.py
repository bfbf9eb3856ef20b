"""`RemoteNode`: the NodeAPI of a node running in another process, over its control socket.

Same method names, same argument and return types as the in-process `LocalNode`; the
wire form comes from `punch_net.ops.wire`, derived from the `NodeAPI` signatures, so each
method below is one line naming its Protocol function. Errors are the NodeError subclass
with the server's code (`NotRunning` for `not_running`, `ControlError` for the control
layer's own codes such as `bad_args` or `disconnected`).

    async with await RemoteNode.connect(path) as node:
        snap = await node.snapshot(["stats"])
        async with node.events(replay=True) as events:
            async for event in events: ...

`RemoteNode.from_stream(stream, name)` speaks the same protocol over any open trio stream
whose other end runs `punch_net.ops.control.serve_stream` (`punch testnet` drives each
child through its stdin/stdout this way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar, cast

import trio

from punch_net import events as ev
from punch_net.api import (
    API_METHODS,
    Candidate,
    DHTProvideResult,
    Health,
    JSONObject,
    NodeAPI,
    NodeInfo,
    PeerAddrs,
    ProviderLookup,
    RefreshResult,
    RelayStatus,
    Reply,
    RouteResult,
    Snapshot,
)
from punch_net.ops import wire
from punch_net.ops.control import EVENT_BUFFER, ControlClient, ControlError
from punch_net.torrent.info import CatalogueEntry, TransferInfo

T = TypeVar("T")

REQUEST_TIMEOUT = 60.0  # on top of a call's own `timeout` argument
CONNECT_TIMEOUT = 10.0


class RemoteEvents:
    """The events of one subscription, typed; drops (the node's or ours) arrive as an
    `ErrorEvent(where="events")` in the stream and add up in `dropped`."""

    def __init__(self, lines: trio.MemoryReceiveChannel[dict[str, object]]) -> None:
        self._lines = lines
        self.dropped = 0  # events lost: the node's drop notices plus lines our buffer had no room for
        self.lost_here = 0  # of which lost on this side (the consumer did not keep up with the socket)
        self._reported_here = 0

    def __aiter__(self) -> RemoteEvents:
        return self

    async def __anext__(self) -> ev.Event:
        while True:
            if self.lost_here > self._reported_here:
                n, self._reported_here = self.lost_here - self._reported_here, self.lost_here
                return self._lost(n, "read too slowly here")
            try:
                msg = await self._lines.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StopAsyncIteration from None
            if msg.get("type") == "dropped":
                count = msg.get("count")
                n = count if isinstance(count, int) and not isinstance(count, bool) else 1
                self.dropped += n
                return self._lost(n, "the node dropped them")
            data = msg.get("event")
            if not isinstance(data, dict):
                continue
            try:
                event = wire.decode_event(data)
            except ControlError as exc:
                return ev.ErrorEvent(message=str(exc), where="events")
            if event is not None:  # None: a kind this side does not know (a newer node)
                return event

    def _lost(self, n: int, why: str) -> ev.ErrorEvent:
        return ev.ErrorEvent(message=f"{n} event{'s' if n != 1 else ''} lost ({why})", where="events")


class RemoteNode:
    """NodeAPI over a control socket. `await RemoteNode.connect(path)` (then `aclose()`),
    or `async with await RemoteNode.connect(path) as node`; or wrap an open ControlClient."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client
        self._subscribed = False  # over a stream: its one subscription is taken

    @classmethod
    def from_stream(cls, stream: trio.abc.Stream, name: str) -> RemoteNode:
        """The NodeAPI over an open stream to `serve_stream` (`name` stands for it in
        errors). Ready at once; `hello` fills in when the server's first line arrives.
        `events()` then shares that stream: one subscription at a time."""
        return cls(ControlClient.from_stream(stream, name))

    @classmethod
    async def connect(cls, path: Path | str, timeout: float = CONNECT_TIMEOUT) -> RemoteNode:
        """Connect and read the hello; ConnectionError if nothing (or not Punch) listens there."""
        client = ControlClient(path)
        with trio.fail_after(timeout):
            await client.__aenter__()
        return cls(client)

    @property
    def path(self) -> str:
        return self._client.path

    @property
    def hello(self) -> Mapping[str, object]:
        """The server's first line: protocol, version, pid and the `NodeInfo` fields."""
        return self._client.hello

    @property
    def connected(self) -> bool:
        return not self._client.closed.is_set()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> RemoteNode:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _invoke(self, method: Callable[..., Awaitable[T]], **kwargs: object) -> T:
        """Call the API method named like `method` (a NodeAPI function) on the node; the
        return type comes from that function's annotation."""
        name = method.__name__
        if name not in API_METHODS:
            raise ControlError("unknown_op", f"{name} is not a request/response API method")
        timeout = kwargs.get("timeout")
        wait = REQUEST_TIMEOUT + (float(timeout) if isinstance(timeout, int | float) else 0.0)
        try:
            data = await self._client.call(name, wire.unstructure_args(name, kwargs), timeout=wait)
        except ControlError as exc:
            raise wire.error_from_wire(exc.code, str(exc)) from None
        except trio.TooSlowError:
            raise ControlError("timeout", f"{name}: the node did not answer within {wait:g}s") from None
        except ConnectionError as exc:
            raise ControlError("disconnected", f"{name}: lost the node at {self.path} ({exc})") from None
        try:
            return cast(T, wire.structure_result(name, data))
        except Exception:
            raise ControlError("bad_reply", f"{name}: the node's answer does not fit the API "
                                            f"(a different Punch version?)") from None

    # ------------------------------------------------------------ NodeAPI

    async def info(self) -> NodeInfo:
        return await self._invoke(NodeAPI.info)

    async def snapshot(self, parts: list[str] | None = None) -> Snapshot:
        return await self._invoke(NodeAPI.snapshot, parts=parts)

    def events(self, replay: bool = True) -> AbstractAsyncContextManager[AsyncIterator[ev.Event]]:
        return self._events(replay)

    async def dial(self, addr: str) -> str:
        return await self._invoke(NodeAPI.dial, addr=addr)

    async def disconnect(self, peer: str) -> None:
        return await self._invoke(NodeAPI.disconnect, peer=peer)

    async def find_peers(self, namespace: str, timeout: float | None = None) -> list[PeerAddrs]:
        return await self._invoke(NodeAPI.find_peers, namespace=namespace, timeout=timeout)

    async def provide(self, namespace: str) -> bool:
        return await self._invoke(NodeAPI.provide, namespace=namespace)

    async def request(self, peer: str, command: str, args: JSONObject | None = None,
                      timeout: float | None = None) -> Reply:
        return await self._invoke(NodeAPI.request, peer=peer, command=command, args=args, timeout=timeout)

    async def send_best(self, namespace: str, command: str, args: JSONObject | None = None,
                        timeout: float | None = None) -> RouteResult:
        return await self._invoke(NodeAPI.send_best, namespace=namespace, command=command, args=args,
                                  timeout=timeout)

    async def rank(self, namespace: str) -> list[Candidate]:
        return await self._invoke(NodeAPI.rank, namespace=namespace)

    async def ping(self, peer: str, timeout: float = 5.0) -> float:
        return await self._invoke(NodeAPI.ping, peer=peer, timeout=timeout)

    async def reputation(self, peer: str | None = None) -> list[JSONObject]:
        return await self._invoke(NodeAPI.reputation, peer=peer)

    async def relay_status(self) -> RelayStatus:
        return await self._invoke(NodeAPI.relay_status)

    async def relay_reserve(self, relay: str) -> RelayStatus:
        return await self._invoke(NodeAPI.relay_reserve, relay=relay)

    async def relay_release(self, relay: str) -> RelayStatus:
        return await self._invoke(NodeAPI.relay_release, relay=relay)

    async def transfers(self) -> list[TransferInfo]:
        return await self._invoke(NodeAPI.transfers)

    async def torrent_add(self, info_hash: str) -> TransferInfo:
        return await self._invoke(NodeAPI.torrent_add, info_hash=info_hash)

    async def torrent_pause(self, info_hash: str) -> None:
        return await self._invoke(NodeAPI.torrent_pause, info_hash=info_hash)

    async def torrent_resume(self, info_hash: str) -> None:
        return await self._invoke(NodeAPI.torrent_resume, info_hash=info_hash)

    async def torrent_cancel(self, info_hash: str) -> None:
        return await self._invoke(NodeAPI.torrent_cancel, info_hash=info_hash)

    async def torrent_verify(self, info_hash: str) -> list[int]:
        return await self._invoke(NodeAPI.torrent_verify, info_hash=info_hash)

    async def torrent_catalogue(self, timeout: float | None = None) -> list[CatalogueEntry]:
        return await self._invoke(NodeAPI.torrent_catalogue, timeout=timeout)

    async def dht_provide(self, key: str) -> DHTProvideResult:
        return await self._invoke(NodeAPI.dht_provide, key=key)

    async def dht_find_providers(self, key: str, count: int = 20, timeout: float = 10.0,
                                 trace: bool = False) -> ProviderLookup:
        return await self._invoke(NodeAPI.dht_find_providers, key=key, count=count, timeout=timeout, trace=trace)

    async def dht_refresh(self) -> RefreshResult:
        return await self._invoke(NodeAPI.dht_refresh)

    async def health(self) -> Health:
        return await self._invoke(NodeAPI.health)

    # ------------------------------------------------------------ events

    @asynccontextmanager
    async def _events(self, replay: bool) -> AsyncIterator[AsyncIterator[ev.Event]]:
        if not self._client.on_socket:
            async with self._shared_events(replay) as stream:
                yield stream
            return
        # A connection of its own: its drops and replay are this subscriber's alone, and
        # a slow consumer never delays the replies of the request connection.
        async with ControlClient(self.path) as client, self._pumped(client, replay) as stream:
            yield stream

    @asynccontextmanager
    async def _shared_events(self, replay: bool) -> AsyncIterator[RemoteEvents]:
        """Over a stream there is no second connection: subscribe on the one we have
        (the server keeps one subscription per connection, hence one at a time)."""
        if self._subscribed:
            raise ControlError("busy", f"{self.path}: one event subscription at a time over a stream")
        self._subscribed = True
        try:
            async with self._pumped(self._client, replay) as stream:
                yield stream
        finally:
            self._subscribed = False
            with trio.CancelScope(shield=True), trio.move_on_after(CONNECT_TIMEOUT):
                try:
                    await self._client.call("unsubscribe", timeout=CONNECT_TIMEOUT)
                except (ControlError, ConnectionError, trio.TooSlowError):
                    pass  # the stream is gone or stuck: nothing left to stop

    @asynccontextmanager
    async def _pumped(self, client: ControlClient, replay: bool) -> AsyncIterator[RemoteEvents]:
        """Subscribe on `client` and pump its event lines into a typed RemoteEvents."""
        try:
            await client.call("subscribe", {"replay": replay}, timeout=REQUEST_TIMEOUT)
        except ControlError as exc:
            raise wire.error_from_wire(exc.code, str(exc)) from None
        send, recv = trio.open_memory_channel[dict[str, object]](EVENT_BUFFER)
        stream = RemoteEvents(recv)

        async def pump() -> None:
            # Drain the socket whatever the consumer's pace, so the node never waits
            # on us; what the buffer cannot hold is counted and reported in the stream.
            with send:
                async for msg in client.events:
                    try:
                        send.send_nowait(msg)
                    except trio.WouldBlock:
                        stream.lost_here += 1
                        stream.dropped += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            try:
                yield stream
            finally:
                nursery.cancel_scope.cancel()


def _conforms(node: RemoteNode) -> NodeAPI:
    return node  # mypy checks here that RemoteNode implements the whole Protocol
