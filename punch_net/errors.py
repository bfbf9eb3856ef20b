"""The errors of the node API: one line for humans, a `code` for programs."""

from __future__ import annotations


class NodeError(Exception):
    """The node cannot start or a command cannot be carried out; one line for humans."""

    code = "failed"


class CommandFailed(NodeError):
    """The peer answered with an error response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class NoCandidates(NodeError):
    """Nobody announces the namespace, or every candidate failed."""

    code = "no_candidates"


class NotRunning(NodeError):
    """This node does not run the component a command needs (e.g. no torrent manager)."""

    code = "not_running"


class BadArgs(NodeError):
    """An argument is malformed (e.g. an info hash that is not 64 hex digits)."""

    code = "bad_args"


class NotFound(NodeError):
    """No such thing here (e.g. no transfer with that info hash)."""

    code = "not_found"


class ControlError(NodeError):
    """A request cannot be carried out by the control layer (punch_net/ops/control.py);
    `code` is machine-readable. Here, not in ops/wire.py, so the control socket can raise it
    without loading the wire form (cattrs) before a client connects."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
