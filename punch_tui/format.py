"""Small pure formatting helpers shared by the tabs (tested without a terminal)."""

from __future__ import annotations

import time

BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def short_id(peer_id: str, n: int = 8) -> str:
    """The tail of a peer id, as libp2p tools print it (`…Ab3dEf9Q`)."""
    return peer_id if len(peer_id) <= n + 1 else "…" + peer_id[-n:]


def age(seconds: float | None) -> str:
    """12s, 4m, 3h, 2d: an age that fits in five columns."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def since(ts: float | None, now: float | None = None) -> str:
    if ts is None or ts <= 0:
        return "never"
    return age((now or time.time()) - ts)


def rate(bytes_per_s: float) -> str:
    """`4.8 MiB/s`: the units of `size`."""
    return f"{size(bytes_per_s)}/s"


def size(n: float) -> str:
    """`4.8 MiB`: binary units, as the CLI prints sizes (punch_net.torrent.events.human_size),
    with no decimal from 100 on, so that any value fits in eight columns (`1023 KiB`)."""
    value, step = float(n), 0
    while abs(value) >= 1024 and step < len(BINARY_UNITS) - 1:
        value /= 1024
        step += 1
    unit = BINARY_UNITS[step]
    if step == 0 or abs(value) >= 99.95:
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 peer`, `2 peers` (`words` for an irregular plural)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def middle(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle (`12D3Koo…BvrchSR`): a peer
    id's head says what kind of key it is and its tail is what short ids show."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = width // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def short_proto(proto: str) -> str:
    """`/ipfs/kad/1.0.0` -> `kad`, `/punch/cmd/1.0.0` -> `punch/cmd`."""
    parts = [p for p in proto.split("/") if p]
    if parts and parts[-1][:1].isdigit():
        parts = parts[:-1]
    if parts and parts[0] in ("ipfs", "libp2p"):
        parts = parts[1:]
    return "/".join(parts) or proto


def failure(label: str, message: str) -> str:
    """`label: message`, unless the node's message already starts with the label's verb
    ("dial X: timed out" under "dial X" would say the dial twice)."""
    verb = label.split(" ", 1)[0]
    if message.startswith(verb + " "):
        return message
    return f"{label}: {message}"
