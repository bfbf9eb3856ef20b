"""Fixtures of the end-to-end tier: the NAT rig (one small internet per test, torn down by
name afterwards) and the console tests' shared local network (one per module, real
processes, stopped by PID at teardown)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rig import NatRig, rig_unavailable_reason
from tui_net import Network

_REASON: list[str | None] = []


def _unavailable() -> str | None:
    if not _REASON:
        _REASON.append(rig_unavailable_reason())
    return _REASON[0]


@pytest.fixture
def make_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., NatRig]]:
    """`make_rig(symmetric=("b",), cloud=True, outside=2)` → a running rig; skipped where namespaces cannot be made."""
    reason = _unavailable()
    if reason:
        pytest.skip(f"NAT rig unavailable: {reason}")
    rigs: list[NatRig] = []
    tag = "".join(ch for ch in request.node.name if ch.isalnum())[-6:]

    def make(symmetric: tuple[str, ...] = (), cloud: bool = False, outside: int = 0, upnp: bool = False,
             forward: tuple[str, ...] = ()) -> NatRig:
        rig = NatRig(prefix=f"pn{os.getpid() % 10000}{tag}{len(rigs)}_", symmetric=symmetric, log_dir=tmp_path,
                     cloud=cloud, outside=outside, upnp=upnp, forward=forward)
        rigs.append(rig)
        rig.__enter__()
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            rig.close()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    net = Network(tmp_path_factory.mktemp("tui-net"))
    try:
        yield net
    finally:
        net.close()
