"""Entry point for `punch-tui` (the console is built in punch_tui.app)."""

import sys


def main() -> int:
    sys.stderr.write("punch-tui: not built yet\n")
    return 1
