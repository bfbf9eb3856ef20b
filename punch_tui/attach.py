"""`punch-tui --attach [SOCKET | DATA_DIR | ROLE]`: which running node to attach to.

Finding and checking the control socket happens before the terminal is taken over, so a
wrong path is one line on stderr (exit 2). When several nodes share a data dir (each has
its own `control*.sock`), none is picked silently: `--attach ROLE` picks by the role the
node's hello names; otherwise a terminal user is asked, and a script gets the list (one
line per node) and exit 2. The connection itself is the bridge's
(`punch_tui.bridge.AttachBridge`, a `RemoteNode` in trio guest mode).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from punch_net.ops.control import MAX_LINE, find_sockets, hello_problem
from punch_net.roles import ROLES, role_name
from punch_tui.format import short_id

CONNECT_TIMEOUT = 5.0


class AttachError(Exception):
    """No node to attach to (one line for the terminal, or the list of nodes to choose from)."""


@dataclass(frozen=True)
class LiveNode:
    """A node answering on a control socket, as its hello describes it."""

    path: Path
    role: str
    peer_id: str
    pid: int | None

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "pid ?"
        return f"{self.role:<15} {short_id(self.peer_id, 8) or '?':<10} {pid:<10} {self.path}"


Chooser = Callable[[list[LiveNode]], LiveNode]


def live_nodes(data_dir: Path) -> list[LiveNode]:
    """The nodes answering on the data dir's control sockets (a socket that does not say
    hello, e.g. a node that died meanwhile, is left out)."""
    nodes = []
    for path in find_sockets(data_dir):
        try:
            hello = read_hello(path)
        except AttachError:
            continue
        pid = hello.get("pid")
        nodes.append(LiveNode(path, str(hello.get("role") or "?"), str(hello.get("peer_id") or ""),
                              pid if isinstance(pid, int) else None))
    return nodes


def resolve_socket(given: str | None, data_dir: Path, choose: Chooser | None = None) -> Path:
    """The socket to attach to: the given socket path; or in the given (or default) data
    dir, its only live node, the only one of the given role, or the one `choose` picks
    (several and no `choose`: AttachError listing them)."""
    role: str | None = None
    if given:
        path = Path(given).expanduser()
        if not path.exists() and role_name(given) in ROLES:
            role = role_name(given)
        elif path.is_dir():
            data_dir = path
        elif path.exists():
            return path
        else:
            raise AttachError(f"no control socket at {path} (is the node running? `punch ROLE` "
                              f"prints its socket at start; or give a data dir or a role)")
    nodes = live_nodes(data_dir)
    if not nodes:
        raise AttachError(f"no running node found in {data_dir} (start one with `punch ROLE`, "
                          f"or give the socket path)")
    if role is not None:
        nodes = [n for n in nodes if n.role == role]
        if not nodes:
            raise AttachError(f"no running {role} in {data_dir} (running: "
                              f"{', '.join(sorted({n.role for n in live_nodes(data_dir)})) or 'none'})")
    if len(nodes) == 1:
        return nodes[0].path
    if choose is not None:
        return choose(nodes).path
    roles = {n.role for n in nodes}
    how = ("--attach ROLE (" + ", ".join(sorted(roles)) + ") or --attach PATH" if len(roles) == len(nodes)
           else "--attach PATH")
    listing = "\n".join(f"  {n.line()}" for n in nodes)
    raise AttachError(f"{len(nodes)} nodes run in {data_dir}; choose one with {how}:\n{listing}")


def ask(stdin: TextIO, stdout: TextIO) -> Chooser:
    """A chooser that asks on the terminal (before the console takes it over)."""

    def choose(nodes: list[LiveNode]) -> LiveNode:
        stdout.write(f"{len(nodes)} nodes run here:\n")
        for i, node in enumerate(nodes, 1):
            stdout.write(f"  {i}) {node.line()}\n")
        stdout.write(f"attach to [1-{len(nodes)}]: ")
        stdout.flush()
        answer = stdin.readline().strip()
        if answer.isdigit() and 1 <= int(answer) <= len(nodes):
            return nodes[int(answer) - 1]
        by_role = [n for n in nodes if answer and n.role == role_name(answer)]
        if len(by_role) == 1:
            return by_role[0]
        raise AttachError(f"no node chosen ({answer!r} is not 1-{len(nodes)})" if answer else "no node chosen")

    return choose


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

