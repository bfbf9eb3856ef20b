"""Fixtures for the punch-tui tests: one shared local network per module (starting
real processes is the slow part), stopped by PID at teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tui_net import Network


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    net = Network(tmp_path_factory.mktemp("tui-net"))
    try:
        yield net
    finally:
        net.close()
