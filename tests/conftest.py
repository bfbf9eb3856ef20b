"""Fixtures shared by every test directory. The helpers live in `punch_harness.py`, a
module with a unique name: `from conftest import ...` would be ambiguous once several
test directories have a conftest.py of their own."""

from punch_harness import free_tcp_port, punch, punch_module, shared_server, silent_peer

__all__ = ["free_tcp_port", "punch", "punch_module", "shared_server", "silent_peer"]
