"""Deep type equality for API values: equal values are not enough (5 == 5.0, and
Outcome.SUCCESS == "SUCCESS"), the local and the remote NodeAPI must give the same types."""

from __future__ import annotations

import dataclasses


def assert_same_types(a: object, b: object, where: str = "") -> None:
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            assert_same_types(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_types(x, y, f"{where}[{i}]")
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            assert_same_types(a[k], b[k], f"{where}[{k!r}]")
