"""Status objects as plain dicts, for every front that shows or exports them."""

from __future__ import annotations

import dataclasses
from typing import Any


def as_plain_dict(value: Any) -> dict[str, Any]:
    """A snapshot object (`to_json()`, a dataclass, a dict or a plain object) as a dict."""
    if isinstance(value, dict):
        return value
    if hasattr(value, "to_json"):
        return dict(value.to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(getattr(value, "__dict__", {}))
