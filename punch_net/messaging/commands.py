"""The command handler registry: applications add their own commands here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from punch_net.messaging.codec import Request


@dataclass(frozen=True)
class Call:
    """What a handler learns about a request: who sent it (the authenticated peer id)
    and the request itself (`request.sender` is the self-declared `from`)."""

    peer_id: str
    request: Request


Handler = Callable[[Call], Awaitable[Any]]


class CommandError(Exception):
    """Raise from a handler to answer with a specific error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class CommandRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("command name must be a non-empty string")
        self._handlers[name] = handler

    def command(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator form of `register`."""

        def wrap(handler: Handler) -> Handler:
            self.register(name, handler)
            return handler

        return wrap

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)
