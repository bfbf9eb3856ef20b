"""`punch-tui --attach [SOCKET]`: which running node to attach to.

Finding and checking the control socket happens before the terminal is taken over, so a
wrong path is one line on stderr (exit 2). The connection itself is the bridge's
(`punch_tui.bridge.AttachBridge`, a `RemoteNode` in trio guest mode).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from punch_net.ops.control import MAX_LINE, default_socket_path, find_sockets, hello_problem

CONNECT_TIMEOUT = 5.0


class AttachError(Exception):
    """No node to attach to (one line for the terminal)."""


def resolve_socket(given: str | None, data_dir: Path) -> Path:
    """The socket to attach to: the given path (a directory means its control.sock), or
    the data dir's control.sock, or its only live control-<pid>.sock."""
    if given:
        path = Path(given).expanduser()
        if path.is_dir():
            data_dir, path = path, default_socket_path(path)
        if path.exists():
            return path
        if not path.is_dir() and given:
            raise AttachError(f"no control socket at {path} (is the node running? `punch ROLE` "
                              f"prints its socket at start)")
    default = default_socket_path(data_dir)
    if default.exists():
        return default
    live = find_sockets(data_dir)
    if len(live) == 1:
        return live[0]
    if not live:
        raise AttachError(f"no running node found in {data_dir} (start one with `punch ROLE`, "
                          f"or give the socket path)")
    raise AttachError(f"several nodes run in {data_dir}; choose one: {' '.join(str(p) for p in live)}")


def read_hello(path: Path, timeout: float = CONNECT_TIMEOUT) -> dict[str, object]:
    """Connect once, synchronously, to learn the node's role before the UI starts."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        buf = b""
        while b"\n" not in buf and len(buf) < MAX_LINE:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except OSError as exc:
        raise AttachError(f"cannot attach to {path}: {exc.strerror or exc}") from None
    finally:
        s.close()
    try:
        hello = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        hello = None
    problem = hello_problem(hello)
    if problem:
        raise AttachError(f"{path}: {problem}")
    assert isinstance(hello, dict)
    return hello
