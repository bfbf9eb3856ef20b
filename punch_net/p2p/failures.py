"""One short reason for a failed dial or stream, out of py-libp2p's nested errors.

py-libp2p wraps a refused TCP connect three or four times (trio's "all attempts to
connect ... failed", OpenConnectionError, SwarmException, MultiError "Error 1: ..."),
each repeating the one before; a user wants "connection refused" once.
"""

from __future__ import annotations

import errno

import trio

ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EPIPE: "connection closed",
}
# py-libp2p's wording of its own refusals -> ours
PHRASES = {
    "negative cache": "its addresses failed moments ago (not redialed for a minute)",
}
_NOISE = ("Error 1: ", " (1 sub-exception)", " (with exceptions)")


def _chain(exc: BaseException, limit: int = 32) -> list[BaseException]:
    """`exc`, its causes/contexts and the members of groups in it (ExceptionGroup's
    `exceptions`, py-libp2p MultiError's `errors`), breadth first."""
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(out) < limit:
        cur = todo.pop(0)
        if any(cur is seen for seen in out):
            continue
        out.append(cur)
        members = getattr(cur, "exceptions", None) or getattr(cur, "errors", None) or ()
        todo.extend(m for m in members if isinstance(m, BaseException))
        nxt = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
        if nxt is not None:
            todo.append(nxt)
    return out


def failure_reason(exc: BaseException) -> str:
    """A short reason for `exc`: the OS's word when a socket error is inside it
    ("connection refused"), else its distinct messages, shortest wording kept."""
    chain = _chain(exc)
    for cur in chain:
        if isinstance(cur, OSError) and cur.errno in ERRNO_WORDS:
            return ERRNO_WORDS[cur.errno]
    lines: list[str] = []
    for cur in chain:
        if isinstance(cur, trio.TooSlowError):
            return "timed out"
        text = str(cur).strip()
        first = text.splitlines()[0] if text else ""
        for phrase, word in PHRASES.items():
            if phrase in first:
                return word
        for noise in _NOISE:
            first = first.replace(noise, "")
        # a wrapper repeats what it wraps: keep one of two lines where one contains the other
        if first and not any(first in seen for seen in lines):
            lines = [seen for seen in lines if seen not in first] + [first]
        if len(lines) >= 3:
            break
    return "; ".join(lines) or type(exc).__name__
