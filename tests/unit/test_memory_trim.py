"""punch_net/rcmgr/memory.py finds glibc's malloc_trim without `ctypes.util.find_library`
(which runs `ldconfig -p` in a child process at every start)."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

from punch_net.rcmgr import memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_malloc_trim_found_without_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child process was started")

    monkeypatch.setattr(subprocess, "Popen", no_child)
    monkeypatch.setattr(ctypes.util, "find_library", no_child)
    assert getattr(memory._libc(), "malloc_trim", None) is not None
