"""punch-tui: the Textual node console."""
