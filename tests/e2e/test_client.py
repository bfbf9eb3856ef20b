"""P2PClient (in this test process) and examples/hello_p2p.py against real `punch` processes."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import trio
from punch_harness import REPO, PunchFactory

from punch_net.client import P2PClient
from punch_net.messaging.commands import Call, CommandError
from punch_net.node import CommandFailed, NodeError
from punch_net.p2p.helpers import quiet_libp2p_logging

pytestmark = pytest.mark.slow
quiet_libp2p_logging()


async def test_client_finds_a_listener_and_talks_json(punch: PunchFactory) -> None:
    server = punch.start("server")
    await server.aevent("listening")
    listener = punch.start("listener", "--bootstrap", server.addr, "--namespace", "my-app")
    await listener.aevent("registered")
    with trio.fail_after(60):
        async with P2PClient(bootstrap=[server.addr_without_id], namespace="my-app", timeout=30) as client:
            peer = await client.connect_to_peer(timeout=30)
            assert peer == listener.peer_id
            assert await client.find_peers() == [listener.peer_id]
            reply = await client.send_and_wait(peer, {"message": "Hello!", "n": 1})
            assert reply["by"] == listener.peer_id and reply["echo"] == "Hello!"
            assert await client.send_command(peer, "echo", {"x": [1, 2]}) == {"x": [1, 2]}
            caps = await client.send_command(peer, "capabilities")
            assert caps["cores"] >= 1
            with pytest.raises(CommandFailed) as info:
                await client.send_and_wait(peer, {"command": "no-such"})
            assert info.value.code == "unknown_command"
            rtt = await client.node.ping(peer)
            assert 0 < rtt < 5
    got = await listener.aevent("message_received", pred=lambda e: e["args"].get("message") == "Hello!")
    assert got["sender"] == client.peer_id


async def test_two_clients_with_custom_commands(punch: PunchFactory) -> None:
    """One client announces itself and answers its own command; another finds and calls it."""
    server = punch.start("server")
    await server.aevent("listening")
    answerer = P2PClient(bootstrap=[server.addr], namespace="calc", announce=True, timeout=30)

    @answerer.command("add")
    async def add(call: Call) -> Any:
        args = call.request.args
        if not isinstance(args.get("a"), int) or not isinstance(args.get("b"), int):
            raise CommandError("bad_args", "a and b must be integers")
        return {"sum": args["a"] + args["b"], "caller": call.peer_id}

    with trio.fail_after(60):
        async with answerer, P2PClient(bootstrap=[server.addr], namespace="calc", timeout=30) as asker:
            peer = await asker.connect_to_peer(timeout=30)
            assert peer == answerer.peer_id
            assert await asker.send_command(peer, "add", {"a": 2, "b": 40}) == {"sum": 42, "caller": asker.peer_id}
            with pytest.raises(CommandFailed, match="bad_args"):
                await asker.send_command(peer, "add", {"a": "x"})
    # An exception from the body reaches the caller as itself, not inside an ExceptionGroup.
    with trio.fail_after(30), pytest.raises(KeyError):
        async with P2PClient(bootstrap=[server.addr], namespace="calc", timeout=30):
            raise KeyError("from the body")


async def test_client_without_bootstrap_fails_cleanly(punch: PunchFactory) -> None:
    from punch_harness import dead_port

    with trio.fail_after(30), pytest.raises(NodeError, match="no bootstrap node answered"):
        async with P2PClient(bootstrap=[f"/ip4/127.0.0.1/tcp/{dead_port()}"], timeout=2):
            pass


def test_hello_p2p_example(punch: PunchFactory) -> None:
    server = punch.server()
    listener = punch.listener(server, "--namespace", "my-app")
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "hello_p2p.py"), "--bootstrap", server.addr_without_id,
         "--namespace", "my-app"],
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"connected to {listener.peer_id}" in done.stdout
    assert '"received": true' in done.stdout and "cores" in done.stdout
