"""py-libp2p's own log lines, tamed in one place (every node gets it through Runtime:
the CLI, the console, P2PClient in an app, the testnet).

py-libp2p logs expected peer failures as warnings and errors: "Failed to open TCP stream"
for every refused dial, its 60 s negative cache, a cancelled connection upgrade with a
whole traceback ("[ADDCONN_FAIL] ... trio.Cancelled"). Its "libp2p" logger has no handler
and does not propagate, so Python's last-resort handler prints them on stderr of any app
that did not set up logging. Punch reports what matters as events and one-line errors.

So records of the "libp2p" and "multiaddr" loggers below CRITICAL are passed on to the
app's (root) handlers as DEBUG records marked "(py-libp2p warning) ...": hidden by
default, there for an app that logs at DEBUG (and lowers the "libp2p" logger's level to
see py-libp2p's own debug lines). CRITICAL ones pass unchanged. `LIBP2P_DEBUG=...` (py-libp2p's
own switch, with its own handlers) is left alone.
"""

from __future__ import annotations

import logging
import os

import libp2p  # importing it resets the "libp2p" logger: do that first

TAMED = ("libp2p", "multiaddr")


class _Demote(logging.Handler):
    """Pass a py-libp2p record on to the root handlers, below CRITICAL as a DEBUG one."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.CRITICAL:
            if record.levelno > logging.DEBUG:
                record.msg = f"(py-libp2p {record.levelname.lower()}) {record.msg}"
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        root = logging.getLogger()
        if root.isEnabledFor(record.levelno):
            root.handle(record)


class _DemoteOnRoot(logging.Filter):
    """The same for the few py-libp2p modules that log on the root logger itself
    (`logging.warning(...)` in network/connection/swarm_connection.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _LIBP2P_DIR not in record.pathname or record.levelno >= logging.CRITICAL:
            return True
        if record.levelno > logging.DEBUG:
            record.msg = f"(py-libp2p {record.levelname.lower()}) {record.msg}"
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


_LIBP2P_DIR = os.path.dirname(libp2p.__file__) + os.sep


def tame_libp2p_logging() -> None:
    """Idempotent; see the module docstring."""
    if os.environ.get("LIBP2P_DEBUG"):
        return
    for name in TAMED:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Demote) for h in logger.handlers):
            logger.addHandler(_Demote())
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)  # as py-libp2p sets its own: no debug records by default
    root = logging.getLogger()
    if not any(isinstance(f, _DemoteOnRoot) for f in root.filters):
        root.addFilter(_DemoteOnRoot())
