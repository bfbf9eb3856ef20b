"""A fork server for `punch testnet`: import Punch and py-libp2p once, fork each node.

Importing py-libp2p costs ~0.7 s of CPU and ~85 MB per interpreter, so 200 fresh
`punch` processes on 2 cores spend over a minute just importing. This process imports
everything once (no threads, no trio run: safe to fork), then, per request, forks a
child that runs exactly `punch ROLE ...` (`punch_net.cli.main(argv)`) in its own
process and session, with the stdin/stdout/stderr the controller passed over a UNIX
socket (SCM_RIGHTS). Copy-on-write pages are shared, so a node's private memory (USS)
is much smaller than its RSS.

Protocol on the SOCK_SEQPACKET socket (one JSON object per message): controller -> zygote
`{"argv": [...]}` with three fds; zygote -> controller `{"pid": N}` or `{"error": ...}`,
and later `{"exit": N, "code": C}` when a child ends. EOF from the controller: the
zygote exits (children then see EOF on stdin and stop themselves).
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

MAX_MSG = 64 * 1024


def _preload() -> None:
    from punch_net.p2p import import_guard

    if import_guard.wanted():
        import_guard.install()  # before libp2p: its unused transports stay out of every node
    # What every child imports (`_child`): the CLI, hence the runtime, py-libp2p and the
    # control protocol, loaded once here and shared copy-on-write by every node.
    import punch_net.cli.main  # noqa: F401
    import punch_testnet.agent  # noqa: F401


def _trim_heap() -> None:
    """Give the C heap's free pages back to the kernel before forking: a child's RSS counts
    every resident page it inherits, free or not (glibc malloc_trim; no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except Exception:
        pass


def _set_comm(name: str) -> None:
    """Name the process for top/ps -o comm (its argv stays the zygote's: it was forked)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except Exception:
        pass


def _child(argv: list[str], fds: list[int], sock: socket.socket) -> None:
    """In the forked child: become `punch ARGV` with the given stdio, never return."""
    code = 1
    try:
        sock.close()
        os.setsid()
        _set_comm(f"punch-{argv[0] if argv else 'node'}")
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        from punch_net.cli.main import main
        from punch_testnet import agent

        code = int(main(argv, extend=agent.compose) or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        code = 1
    finally:
        try:
            sys.stdout.flush()
        except Exception:
            pass
        os._exit(code)


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    try:
        sock.sendall(json.dumps(msg).encode() + b"\n")
    except OSError:
        pass


def serve(sock: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    children: set[int] = set()
    while True:
        for _key, _ in sel.select(timeout=0.2):
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MSG, 3)
            except OSError:
                data, fds = b"", []
            if not data:
                return
            try:
                msg = json.loads(data)
                argv = [str(a) for a in msg["argv"]]
                if len(fds) != 3:
                    raise ValueError("need 3 fds")
            except (ValueError, KeyError, TypeError) as exc:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"error": f"bad request: {exc}"})
                continue
            pid = os.fork()
            if pid == 0:
                _child(argv, fds, sock)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            _send(sock, {"pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> int:
    fd = int(sys.argv[1])
    sock = socket.socket(fileno=fd)
    _preload()
    # Move every preloaded object into the permanent generation: the children's garbage
    # collector then never walks (and so never writes to, and copies) these shared pages.
    gc.collect()
    gc.freeze()
    _trim_heap()
    _send(sock, {"ready": os.getpid()})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller decides when we stop
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
