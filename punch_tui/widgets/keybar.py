"""A one-line key bar: the bindings that work right now, like Textual's Footer, but
drawn as a single line of text. Textual's Footer rebuilds a widget per key on every
focus change, which cost most of a tab switch under load; this costs one repaint."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.screen import Screen
from textual.widget import Widget


class KeyBar(Widget):
    COMPONENT_CLASSES = {"keybar--key", "keybar--desc"}
    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $footer-background; color: $footer-foreground; }
    KeyBar > .keybar--key { color: $footer-key-foreground; background: $footer-key-background; text-style: bold; }
    KeyBar > .keybar--desc { color: $footer-description-foreground; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._items: list[tuple[str, str]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[Any]) -> None:
        seen: set[str] = set()
        items: list[tuple[str, str]] = []
        for _node, binding, enabled, _tooltip in screen.active_bindings.values():
            if not binding.show or not enabled or binding.action in seen:
                continue
            seen.add(binding.action)
            items.append((self.app.get_key_display(binding), binding.description))
        if items != self._items:
            self._items = items
            self.refresh()

    @property
    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def render(self) -> Text:
        key_style = self.get_component_rich_style("keybar--key")
        desc_style = self.get_component_rich_style("keybar--desc")
        text = Text(no_wrap=True, overflow="ellipsis")
        for key, desc in self._items:
            text.append(f" {key} ", key_style)
            text.append(f"{desc} ", desc_style)
        return text
