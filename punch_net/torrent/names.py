"""File names that come from the network are data, never paths."""

from __future__ import annotations

import unicodedata

MAX_NAME_BYTES = 255


class UnsafeName(ValueError):
    """A name that could escape the download directory or is not a plain file name."""


def check_name(name: str) -> str:
    """Return `name` if it is one plain file-name component, else raise UnsafeName.

    Refused: empty, `.`/`..`, any `/` or `\\`, NUL or other control characters, names
    longer than 255 UTF-8 bytes, and names that would be hidden resume/part files
    of ours are allowed (they are just names) but leading '-' is fine too.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeName("empty file name")
    if name in (".", ".."):
        raise UnsafeName(f"file name {name!r} is a directory reference")
    for ch in name:
        if ch in "/\\":
            raise UnsafeName(f"file name {name!r} contains a path separator")
        if ch == "\x00":
            raise UnsafeName(f"file name {name!r} contains NUL")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            raise UnsafeName(f"file name {name!r} contains a control character")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UnsafeName(f"file name is longer than {MAX_NAME_BYTES} bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeName(f"file name {name!r} is not valid UTF-8") from None
    return name
