"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way.

This kernel has tc tbf but no netem, so there is no delay emulation in the network rigs;
round trips that a protocol spends show up through this proxy as whole multiples of
2 × `delay`. Bytes keep their order; each direction is its own pipe.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

CHUNK = 64 * 1024


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, delay: float) -> None:
    send, recv = trio.open_memory_channel[tuple[float, bytes]](math.inf)

    async def read() -> None:
        async with send:
            try:
                while data := await src.receive_some(CHUNK):  # ends at EOF
                    await send.send((trio.current_time() + delay, data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the sender went away: what it sent still goes out

    async def write() -> None:
        async with recv:
            try:
                async for due, data in recv:
                    await trio.sleep_until(due)
                    await dst.send_all(data)
                await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the receiver went away: drop the rest

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(write)


@asynccontextmanager
async def delay_proxy(target_port: int, delay: float, port: int = 0) -> AsyncIterator[int]:
    """Yields a 127.0.0.1 port (`port`, or any) whose connections reach 127.0.0.1:`target_port`,
    each byte `delay` seconds late in each direction; closed (every connection with it) on exit."""

    async def handle(client: trio.SocketStream) -> None:
        try:
            with trio.fail_after(10):
                server = await trio.open_tcp_stream("127.0.0.1", target_port)
        except (OSError, trio.TooSlowError):
            await client.aclose()  # as the target would: refused
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(_pipe, client, server, delay)
            nursery.start_soon(_pipe, server, client, delay)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, port, host="127.0.0.1"))
        try:
            yield listeners[0].socket.getsockname()[1]
        finally:
            nursery.cancel_scope.cancel()


async def _serve_until_stdin_closes(target_port: int, delay: float, port: int) -> None:
    async with delay_proxy(target_port, delay, port) as bound:
        print(bound, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # the parent closes stdin (or dies): stop


if __name__ == "__main__":  # python delay_proxy.py TARGET_PORT DELAY_S [PORT]: for benchmarks
    trio.run(_serve_until_stdin_closes, int(sys.argv[1]), float(sys.argv[2]),
             int(sys.argv[3]) if len(sys.argv) > 3 else 0)
