"""The control socket's wire form, derived from `punch_net.api.NodeAPI` and nothing else.

One cattrs converter turns API results (dataclasses, enums, lists, dicts, `object`-typed
JSON passthrough, None) into JSON-ready data and back, guided by the return annotation of
the NodeAPI method; method arguments are checked against its parameter annotations. A new
API method therefore needs no wire code: the server and `RemoteNode` look it up by name.

Events travel as their `to_json()` shape (`{"event": KIND, "ts": ..., ...fields}`);
`decode_event` knows every `Event` subclass by its `kind` and skips unknown kinds, so an
older console keeps working against a newer node.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import TypeVar, cast

import cattrs

import punch_net.torrent.events  # noqa: F401 - registers the torrent Event subclasses
from punch_net import api
from punch_net import events as ev
from punch_net.errors import ControlError

T = TypeVar("T")

# Plain string arguments are ids, addresses and names: never empty, never huge.
MAX_STR_ARG = 4096
# A remote caller must not park a node task for ever; `timeout` arguments are bounded.
MAX_TIMEOUT = 300.0

# Codes the control layer itself answers with (not raised by a NodeAPI implementation).
CONTROL_CODES = frozenset({"bad_request", "bad_args", "unknown_op", "too_long", "timeout"})


# ---------------------------------------------------------------- the converter


def _strict(kind: type, name: str) -> Callable[[object, type], object]:
    """cattrs' default str/int hooks coerce (`str(5)`); a wrong JSON type must be refused."""

    def hook(value: object, cl: type) -> object:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got bool")
        if kind is float and isinstance(value, int):
            value = float(value)  # JSON has one number type: 5 is a fine float
        if not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        # A class hook also catches subclasses: a str enum such as relay Outcome.
        return value if cl is kind else cl(value)

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    for kind, name in ((str, "string"), (int, "integer"), (float, "number"), (bool, "boolean")):
        conv.register_structure_hook(kind, _strict(kind, name))
    # `object` marks JSON passthrough (Reply.result, JSONObject values): kept as is. A
    # predicate, not a class hook: that would catch every class.
    conv.register_structure_hook_func(lambda t: t is object, lambda value, _: value)

    # cattrs would build a list from any iterable ("abc" -> ["a", "b", "c"]) and a dict
    # from any mapping: on the wire only a JSON array / object will do.
    def list_hook(t: object) -> Callable[[object, object], object]:
        item = (typing.get_args(t) or (object,))[0]

        def hook(value: object, _: object) -> object:
            if not isinstance(value, list):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            return [conv.structure(v, item) for v in value]

        return hook

    def dict_hook(t: object) -> Callable[[object, object], object]:
        key, val = typing.get_args(t) or (str, object)

        def hook(value: object, _: object) -> object:
            if not isinstance(value, dict):
                raise TypeError(f"expected an object, got {type(value).__name__}")
            return {conv.structure(k, key): conv.structure(v, val) for k, v in value.items()}

        return hook

    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is list, list_hook)
    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is dict, dict_hook)
    return conv


converter = _make_converter()


def unstructure(value: object, as_type: object = None) -> object:
    """JSON-ready data (dicts, lists, str, numbers, bools, None) of an API value."""
    if as_type is None or as_type is type(None):
        return converter.unstructure(value)
    return converter.unstructure(value, unstructure_as=as_type)  # type: ignore[arg-type]


def structure(data: object, as_type: object) -> object:
    """The typed value of `as_type` from its JSON data; raises on a shape mismatch."""
    if as_type is type(None) or as_type is None:
        if data is not None:
            raise TypeError(f"expected null, got {type(data).__name__}")
        return None
    return converter.structure(data, as_type)  # type: ignore[call-overload,arg-type]


# ---------------------------------------------------------------- API methods


@functools.cache
def method_hints(name: str) -> dict[str, object]:
    """Resolved annotations (parameters and "return") of `NodeAPI.<name>`."""
    return dict(typing.get_type_hints(getattr(api.NodeAPI, name)))


@functools.cache
def method_params(name: str) -> tuple[inspect.Parameter, ...]:
    """The parameters of `NodeAPI.<name>` after `self`."""
    sig = inspect.signature(getattr(api.NodeAPI, name))
    return tuple(p for p in sig.parameters.values() if p.name != "self")


def return_type(name: str) -> object:
    rtype = method_hints(name).get("return")
    return type(None) if rtype is None else rtype


def protocol_methods() -> list[str]:
    """Public methods the NodeAPI Protocol declares, in definition order."""
    return [n for n, v in vars(api.NodeAPI).items() if not n.startswith("_") and inspect.isfunction(v)]


def type_name(hint: object) -> str:
    """A short readable name of a type hint for one-line error messages."""
    if hint is type(None):
        return "null"
    if isinstance(hint, type) and not typing.get_args(hint):
        return {str: "string", int: "integer", float: "number", bool: "boolean", object: "any JSON value"}.get(
            hint, hint.__name__)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"a list of {type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "an object"
    return str(hint)


def structure_args(name: str, args: Mapping[str, object]) -> dict[str, object]:
    """Keyword arguments of `NodeAPI.<name>` from a JSON object, checked against its
    annotations; raises ControlError("bad_args", one line) on unknown, missing or mistyped ones."""
    params = method_params(name)
    hints = method_hints(name)
    known = {p.name for p in params}
    unknown = sorted(set(args) - known)
    if unknown:
        takes = ", ".join(p.name for p in params) or "no arguments"
        raise ControlError("bad_args", f"{name}: unknown argument {unknown[0]!r} (takes: {takes})")
    out: dict[str, object] = {}
    for p in params:
        if p.name not in args:
            if p.default is inspect.Parameter.empty:
                raise ControlError("bad_args", f"{name}: missing argument {p.name!r}")
            continue
        hint = hints.get(p.name, object)
        try:
            value = structure(args[p.name], hint)
        except Exception:  # cattrs raises nested groups; one line is what a human needs
            raise ControlError("bad_args", f"{name}: {p.name!r} must be {type_name(hint)}") from None
        _check_bounds(name, p.name, value)
        out[p.name] = value
    return out


def _check_bounds(method: str, param: str, value: object) -> None:
    if isinstance(value, str) and not (0 < len(value) <= MAX_STR_ARG):
        raise ControlError("bad_args", f"{method}: {param!r} must be a non-empty string of at most "
                                       f"{MAX_STR_ARG} characters")
    if param == "timeout" and isinstance(value, float) and not 0 < value <= MAX_TIMEOUT:
        raise ControlError("bad_args", f"{method}: 'timeout' must be a number of seconds in (0, {MAX_TIMEOUT:g}]")


def unstructure_args(name: str, kwargs: Mapping[str, object]) -> dict[str, object]:
    """The JSON object of keyword arguments for a call of `NodeAPI.<name>`."""
    hints = method_hints(name)
    return {k: unstructure(v, hints.get(k)) for k, v in kwargs.items()}


def unstructure_result(name: str, value: object) -> object:
    return unstructure(value, return_type(name))


def structure_result(name: str, data: object) -> object:
    return structure(data, return_type(name))


# ---------------------------------------------------------------- errors


def _error_classes() -> dict[str, type[api.NodeError]]:
    """code -> the NodeError subclass that declares it as a class attribute."""
    out: dict[str, type[api.NodeError]] = {}
    todo: list[type[api.NodeError]] = [api.NodeError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "code" in vars(cls) and isinstance(vars(cls)["code"], str):
            out.setdefault(vars(cls)["code"], cls)
    return out


def error_from_wire(code: str, message: str) -> api.NodeError:
    """The NodeError a remote call raises: the class that owns `code`; control-layer codes
    give ControlError; any other code is a peer's answer (CommandFailed). Its str() is the
    server's message unchanged."""
    if code in CONTROL_CODES:
        return ControlError(code, message)
    cls: type[api.NodeError] = _error_classes().get(code, api.CommandFailed)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)  # not cls.__init__: CommandFailed would prefix the code again
    exc.code = code
    return exc


def error_to_wire(exc: BaseException) -> tuple[str, str]:
    """(code, one-line message) of an exception raised by an API call."""
    code = getattr(exc, "code", None)
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return (code if isinstance(code, str) and code else "failed"), line


# ---------------------------------------------------------------- events


def _event_classes() -> dict[str, type[ev.Event]]:
    out: dict[str, type[ev.Event]] = {}
    todo: list[type[ev.Event]] = [ev.Event]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is not ev.Event and dataclasses.is_dataclass(cls):
            out.setdefault(cls.kind, cls)
    return out


@functools.cache
def event_classes() -> dict[str, type[ev.Event]]:
    """kind -> Event class, every subclass loaded so far (torrent events included)."""
    return _event_classes()


def encode_event(event: ev.Event) -> dict[str, object]:
    """`{"event": KIND, "ts": ..., ...fields}`: the shape `--json` prints."""
    data = cast(dict[str, object], converter.unstructure(event))
    return {"event": event.kind, **data}


def decode_event(data: Mapping[str, object]) -> ev.Event | None:
    """The typed event; None for a kind this side does not know (a newer node).

    Unknown fields are ignored for the same reason; a known kind whose fields do not fit
    raises ControlError("bad_event")."""
    kind = data.get("event")
    cls = event_classes().get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    body = {k: v for k, v in data.items() if k != "event"}
    try:
        return cast(ev.Event, converter.structure(body, cls))
    except Exception:
        raise ControlError("bad_event", f"event {kind!r} does not fit {cls.__name__}") from None
