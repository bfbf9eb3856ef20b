"""punch_net/cli/codecache.py: dataclasses built with the cached exec (and attrs classes with
the cached compile) are the same classes, the table round-trips through its file, and
nothing is written under -B."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from punch_net.cli import codecache


def make_classes() -> tuple[type, type]:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Frozen:
        a: int
        b: str = "x"
        c: tuple[int, ...] = ()

    @dataclasses.dataclass(order=True)
    class Plain:
        n: int
        name: str = ""
        tags: list[str] = dataclasses.field(default_factory=list)

    return Frozen, Plain


def behaviour(frozen: type, plain: type) -> list[object]:
    f = frozen(a=1, c=(2,))
    init_f = inspect.signature(frozen.__init__).parameters.values()
    init_p = inspect.signature(plain.__init__).parameters.values()
    out: list[object] = [repr(f), f == frozen(a=1, c=(2,)), hash(frozen(a=3)) == hash(frozen(a=3)),
                         repr(plain(2, "y")), plain(1) < plain(2), sorted([plain(3), plain(1)])[0].n,
                         plain(1).tags is not plain(1).tags,
                         [(p.name, p.annotation, p.default) for p in init_f], [(p.name, p.annotation) for p in init_p]]
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.a = 2
    return out


def make_attrs_classes() -> tuple[type, type]:
    @attrs.define
    class Mutable:  # eq without __hash__: its methods are cached
        a: int
        b: list[int] = attrs.Factory(list)

    @attrs.frozen
    class Frozen:  # a __hash__ salted per process: compiled every time
        a: int

    return Mutable, Frozen


def attrs_behaviour(mutable: type, frozen: type) -> list[object]:
    m = mutable(1)
    init = inspect.signature(mutable.__init__).parameters.values()
    out: list[object] = [repr(m), m == mutable(1), m.b is not mutable(1).b, hash(frozen(2)) == hash(frozen(2)),
                         [(p.name, p.annotation, p.default) for p in init], mutable.__init__.__code__.co_filename]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        frozen(2).a = 3
    return out


@pytest.fixture
def cache_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "punch" / "dc.marshal"
    codecache.uninstall()


@pytest.mark.skipif(not (3, 11) <= sys.version_info < (3, 13), reason="installs on 3.11 and 3.12 only")
def test_same_classes_and_the_file_round_trips(cache_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    expected = behaviour(*make_classes())
    first = codecache.install(str(cache_path))
    assert first is not None
    assert behaviour(*make_classes()) == expected  # annotations are objects, not strings: no __future__ leak
    assert first.compiled > 0 and first.save() and cache_path.exists()
    codecache.uninstall()
    second = codecache.install(str(cache_path))
    assert second is not None and second.known
    assert behaviour(*make_classes()) == expected
    assert second.compiled == 0  # every method came from the file
    assert not second.save()  # nothing new: the file is not rewritten


@pytest.mark.skipif(not (3, 11) <= sys.version_info < (3, 13), reason="installs on 3.11 and 3.12 only")
def test_attrs_classes_the_same_from_the_cached_compile(cache_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    expected = attrs_behaviour(*make_attrs_classes())
    first = codecache.install(str(cache_path))
    assert first is not None and "compile" in vars(sys.modules["attr._make"])
    assert attrs_behaviour(*make_attrs_classes()) == expected
    assert first.compiled > 0 and first.save()
    codecache.uninstall()
    assert "compile" not in vars(sys.modules["attr._make"])
    second = codecache.install(str(cache_path))
    assert second is not None
    assert attrs_behaviour(*make_attrs_classes()) == expected
    assert second.compiled == 0  # the salted __hash__ is compiled outside the table, not counted


def test_nothing_written_under_dont_write_bytecode(cache_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cache = codecache.CodeCache(str(cache_path))
    cache.exec("x = 1", {}, {})
    assert cache.compiled == 1
    assert not cache.save() and not cache_path.exists()


def test_a_damaged_file_is_an_empty_table(tmp_path: Path) -> None:
    bad = tmp_path / "dc.marshal"
    bad.write_bytes(b"\x00garbage")
    assert codecache.CodeCache(str(bad)).known == {}
    assert codecache.CodeCache(str(tmp_path / "missing")).known == {}


def test_exec_without_namespaces_uses_the_callers() -> None:
    cache = codecache.CodeCache("/nonexistent/dc.marshal")
    ns: dict[str, object] = {}
    cache.exec("y = 40 + 2", ns, ns)
    assert ns["y"] == 42
