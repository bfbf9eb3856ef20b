"""Bytecode for the methods `dataclasses` writes, kept between `punch` starts.

Every `@dataclass` writes the source of its `__init__`, `__repr__`, `__eq__`, ... and
compiles it with `exec` (CPython 3.11-3.13). The ~170 dataclasses a torrent client's
imports define make ~740 such sources: ~46 ms of CPU at every start, the largest single
part of the imports once the modules themselves have bytecode (docs/TORRENT.md, "Third
pass"). `install()` gives the `dataclasses` module its own `exec` that looks the source
up in a table of code objects first, and attrs (trio's classes: ~70 methods, ~10 ms) its
own `compile`; `save()` writes the table (marshal, one file per
interpreter version, like a .pyc) when something new was compiled and bytecode may be
written (not under `python -B` / PYTHONDONTWRITEBYTECODE). The key is the whole source,
so a stale entry is never used for other source; the result is the code `exec` would have
compiled. PUNCH_CODE_CACHE=0 turns it off. Imports nothing outside the standard library
but attrs (which every `punch` loads through trio anyway).
"""

from __future__ import annotations
import __future__

import builtins
import marshal
import os
import sys
import types
from collections.abc import Mapping
from typing import Any

ENV_FLAG = "PUNCH_CODE_CACHE"
MAX_BYTES = 8 << 20  # a larger file is not ours (or is garbage): ignored


def default_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "punch", f"dataclass-code.{sys.implementation.cache_tag}.marshal")


class CodeCache:
    def __init__(self, path: str) -> None:
        self.path = path
        self.known: dict[str, types.CodeType] = _load(path)
        self.used: dict[str, types.CodeType] = {}
        self.compiled = 0

    def exec(self, source: object, globals: dict[str, Any] | None = None,
             locals: Mapping[str, object] | None = None, /) -> None:
        """`builtins.exec`, with source text compiled at most once per cache file."""
        if globals is None:  # as exec: the caller's namespaces
            frame = sys._getframe(1)
            globals = frame.f_globals
            if locals is None:
                locals = frame.f_locals
        if isinstance(source, str):
            # dont_inherit: compiled as `exec` in dataclasses.py would (no __future__ flags of ours)
            source = self._code(source, source, "<string>", 0)
        builtins.exec(source, globals, locals)  # type: ignore[arg-type]

    def _code(self, key: str, source: str, filename: str, flags: int) -> types.CodeType:
        """The code for `key` from the table, else compiled now; kept for `save`."""
        code = self.known.get(key)
        if code is None:
            code = builtins.compile(source, filename, "exec", flags, dont_inherit=True)
            self.compiled += 1
        self.used[key] = code
        return code

    def compile_for(self, module: types.ModuleType) -> Any:
        """`builtins.compile` for the code `module` generates (attrs' `_compile_and_eval`):
        looked up by file name and source, compiled with `module`'s `__future__` flags as
        the builtin called from there would."""
        flags = 0
        for name in __future__.all_feature_names:
            feature = getattr(__future__, name)
            if vars(module).get(name) is feature:
                flags |= int(getattr(feature, "compiler_flag", 0))

        def compile_(source: object, filename: str, mode: str, *args: Any, **kwargs: Any) -> types.CodeType:
            if not isinstance(source, str) or mode != "exec" or args or kwargs:
                return builtins.compile(source, filename, mode, *args, **kwargs)  # type: ignore[call-overload, no-any-return]
            if "def __hash__" in source:  # salted with hash(filename): other source at every start
                return builtins.compile(source, filename, "exec", flags, dont_inherit=True)
            # a NUL in the key: never a dataclass key (plain source)
            return self._code(f"{filename}\0{source}", source, filename, flags)

        return compile_

    def save(self) -> bool:
        """Write what this process used, if it compiled anything new. Never raises."""
        if not self.compiled or sys.dont_write_bytecode:
            return False
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(tmp, "wb") as f:
                marshal.dump(self.used, f)
            os.replace(tmp, self.path)  # readers see the old file or the new one, whole
        except (OSError, ValueError):
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        self.known.update(self.used)
        self.compiled = 0
        return True


def _load(path: str) -> dict[str, types.CodeType]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        table = marshal.loads(data) if len(data) <= MAX_BYTES else None
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if isinstance(k, str) and isinstance(v, types.CodeType)}


def wanted() -> bool:
    return os.environ.get(ENV_FLAG, "1") != "0"


def install(path: str | None = None) -> CodeCache | None:
    """Give `dataclasses` the cached exec and attrs the cached compile (None where
    dataclasses does not compile with `exec`)."""
    import dataclasses

    if "exec" in vars(dataclasses) or not (3, 11) <= sys.version_info < (3, 13):
        return None  # installed already, or a dataclasses this was not checked against (3.13 differs)
    cache = CodeCache(path or default_path())
    dataclasses.exec = cache.exec  # type: ignore[attr-defined]  # a module global shadows the builtin there
    attrs = _attrs_make()
    if attrs is not None:
        attrs.compile = cache.compile_for(attrs)  # type: ignore[attr-defined]
    return cache


def _attrs_make() -> types.ModuleType | None:
    """attrs' class builder, if it compiles its methods as we know (`compile(script, filename,
    "exec")` in `_compile_and_eval`, attrs 22-26) and has no `compile` of its own."""
    try:
        from attr import _make
    except ImportError:
        return None
    fn = getattr(_make, "_compile_and_eval", None)
    if fn is None or "compile" not in fn.__code__.co_names or "compile" in vars(_make):
        return None
    return _make


def uninstall() -> None:
    import dataclasses

    vars(dataclasses).pop("exec", None)
    attrs = sys.modules.get("attr._make")
    if attrs is not None:
        vars(attrs).pop("compile", None)


__all__ = ["CodeCache", "default_path", "install", "uninstall", "wanted"]
