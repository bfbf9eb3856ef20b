"""trio's exception groups, as one error for humans and callers.

A nursery wraps what ended it in a BaseExceptionGroup (strict groups); most callers want
the one exception that matters: the first that is not a Cancelled."""

from __future__ import annotations

import trio


def first_error(exc: BaseException) -> BaseException:
    """The first non-Cancelled exception inside (nested) groups; `exc` itself if none."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    for inner in exc.exceptions:
        found = first_error(inner)
        if not isinstance(found, trio.Cancelled):
            return found
    return exc


def only_cancelled(exc: BaseException) -> bool:
    """Did only cancellation (or ctrl+c) end this, however deeply grouped?"""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)
