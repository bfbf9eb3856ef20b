"""The unit tier opens no sockets: pure cores, codecs, widgets. A test here that binds or
connects a socket fails at once (move it to tests/integration), so the tier stays fast
and cannot depend on the network or on what else the machine is doing. Socket pairs
(trio's and asyncio's wake-up pipes) are not refused: they never bind or connect."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


class SocketUsed(AssertionError):
    pass


def _refuse(*args: object, **kwargs: object) -> None:
    raise SocketUsed("unit tests open no sockets: move this test to tests/integration")


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("bind", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, _refuse)
    yield
