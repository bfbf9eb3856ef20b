"""Fixtures shared by every tier. Tiers: tests/unit (no sockets: a guard in its
conftest refuses them), tests/integration (real hosts on 127.0.0.1 in one process),
tests/e2e (separate processes, tmux, network namespaces, chromium). Helpers live in
tests/support (on sys.path from here), with unique module names."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "support"))

from punch_harness import free_tcp_port, punch, punch_module, shared_server, silent_peer

__all__ = ["free_tcp_port", "punch", "punch_module", "shared_server", "silent_peer"]
