"""A tiny terminal for tests: replays what a program wrote to a pty into screen lines.

Handles what rich's live display and plain printing emit: text, CR, LF, erase line
(ESC[2K), cursor up/down (ESC[nA / ESC[nB); colours and cursor show/hide are ignored. Enough
to see whether two writers broke into each other's lines."""

from __future__ import annotations

import re

_CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


def render(data: bytes) -> list[str]:
    text = data.decode("utf-8", errors="replace")
    lines = [""]
    row = col = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = _CSI.match(text, i)
            if m is None:
                i += 1
                continue
            params, cmd = m.groups()
            n = int(params) if params.isdigit() else 1
            if cmd == "K":
                lines[row] = "" if params == "2" else lines[row][:col]
            elif cmd == "A":
                row = max(0, row - n)
            elif cmd == "B":
                row += n
            elif cmd == "G":
                col = n - 1
            i = m.end()
        elif ch == "\r":
            col = 0
            i += 1
        elif ch == "\n":
            row += 1
            col = 0
            i += 1
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
            i += 1
        while len(lines) <= row:
            lines.append("")
    return lines
