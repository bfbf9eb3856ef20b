"""py-libp2p's log lines: hidden by default, there as DEBUG for an app that logs at DEBUG,
CRITICAL ones untouched (punch_net/p2p/logs.py, issue #15.7)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from punch_net.p2p.logs import tame_libp2p_logging

PROG = """
import logging, sys
{setup}
from punch_net.p2p.logs import tame_libp2p_logging
tame_libp2p_logging()
tame_libp2p_logging()  # idempotent
logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: all attempts failed")
logging.getLogger("libp2p.network.swarm").warning("[ADDCONN_FAIL] add_conn failed: Cancelled")
logging.getLogger("libp2p.network.swarm").critical("the sky fell")
logging.getLogger("myapp").warning("the app's own warning")
print("done", file=sys.stderr)
"""


def run(setup: str = "") -> str:
    done = subprocess.run([sys.executable, "-c", PROG.format(setup=setup)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_an_app_that_set_up_no_logging_sees_only_critical_ones() -> None:
    err = run()
    assert "Failed to open" not in err and "ADDCONN_FAIL" not in err
    assert "the sky fell" in err and "the app's own warning" in err and "done" in err


def test_an_app_logging_at_info_sees_none_of_the_expected_failures() -> None:
    err = run("logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s %(message)s')")
    assert "Failed to open" not in err and "ADDCONN_FAIL" not in err
    assert "CRITICAL libp2p.network.swarm the sky fell" in err and "WARNING myapp" in err


def test_an_app_logging_at_debug_still_sees_them_marked() -> None:
    err = run("logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s %(message)s')")
    assert ("DEBUG libp2p.transport.tcp.tcp (py-libp2p error) Failed to open TCP stream: all attempts failed"
            in err)
    assert "DEBUG libp2p.network.swarm (py-libp2p warning) [ADDCONN_FAIL]" in err


def test_libp2p_modules_logging_on_the_root_logger_are_tamed_too(caplog: pytest.LogCaptureFixture) -> None:
    import libp2p.network.connection.swarm_connection as sc

    tame_libp2p_logging()
    record = logging.LogRecord("root", logging.WARNING, sc.__file__, 1, "Error resetting stream: x", None, None)
    with caplog.at_level(logging.INFO):
        logging.getLogger().handle(record)
    assert not [r for r in caplog.records if "resetting" in r.getMessage()]
    record = logging.LogRecord("root", logging.WARNING, sc.__file__, 1, "Error resetting stream: y", None, None)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger().handle(record)
    got = [r for r in caplog.records if "resetting" in r.getMessage()]
    assert got and got[0].levelno == logging.DEBUG and "(py-libp2p warning)" in got[0].getMessage()
