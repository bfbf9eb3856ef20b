"""Small helpers for tests/monitor (kept here: `from conftest import ...` was ambiguous when
several test directories have a conftest.py). The `punch` fixture comes from tests/conftest.py."""

from __future__ import annotations

import socket
from typing import Any

PunchFactory = Any  # tests/conftest.py's PunchFactory (the `punch` fixture)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
