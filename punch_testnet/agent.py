"""What `punch testnet` adds to the nodes it starts: the control protocol on stdin/stdout.

Only processes the testnet starts get it (PUNCH_TESTNET=1 and `cli.main(extend=agent.compose)`:
`punch_testnet.child`, the zygote); a normal node has no stdin channel. The controller drives
each child through a `RemoteNode` over the child's pipes: the NodeAPI and wire of the
control socket (`punch_net.ops.control.serve_stream`), nothing of its own, and no libp2p
connection, so watching a network adds no connections or load to it.

stdout also carries the node's `--json` event lines; the controller tells them apart (an
event line's "event" is a string; a control line has a "type": hello, reply, event, dropped).
When stdin closes, the controller is gone (even if it was SIGKILLed): the node stops as on
SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

import trio
from trio_typing import TaskStatus

from punch_net.api import NodeAPI
from punch_net.ops.control import serve_stream

if TYPE_CHECKING:
    from punch_net.runtime import Runtime

ENV_FLAG = "PUNCH_TESTNET"


def enabled() -> bool:
    return os.environ.get(ENV_FLAG) == "1"


def compose(rt: Runtime) -> None:
    """Serve the node's API on stdin/stdout (the testnet's children only)."""
    if not enabled():
        return

    async def service(*, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await serve_stdio(rt.api)

    rt.add_service(service)


class StdoutStream(trio.abc.SendStream):
    """Control lines to stdout through `sys.stdout`, the writer the `--json` event lines
    use (cli/main.py Printer): both write whole lines synchronously from the one trio
    thread, so a reply never lands inside an event line. Not a trio FdStream on fd 1: that
    would make the shared pipe non-blocking, and the Printer's plain writes would then fail
    with BlockingIOError whenever the controller reads slowly."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        try:
            sys.stdout.write(bytes(data).decode())
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # ValueError: stdout closed
            raise trio.BrokenResourceError("stdout closed") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()  # fd 1 stays open: the event lines still go there


async def serve_stdio(api: NodeAPI) -> None:
    """Serve `api` over stdin/stdout until stdin closes; then stop this process."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))  # a dup: closing it leaves fd 0 alone
    await serve_stream(api, trio.StapledStream(StdoutStream(), stdin))
    # stdin closed (or stdout broke): the controller is gone; stop like on SIGTERM (clean shutdown)
    os.kill(os.getpid(), signal.SIGTERM)


__all__ = ["ENV_FLAG", "StdoutStream", "compose", "enabled", "serve_stdio"]
