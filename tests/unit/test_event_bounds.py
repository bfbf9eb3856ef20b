"""Events are bounded (issue #14.4), repeated failures are said once then rarely, and a
failed bootstrap try is one clear sentence (issue #15.7)."""

from __future__ import annotations

import errno
import io
import json
from typing import Any

import pytest
import trio

from punch_net import events as ev
from punch_net.cli.render import human
from punch_net.p2p.addresses import short_peer_id
from punch_net.p2p.failures import failure_reason
from punch_net.torrent import events as tev

PEER = "12D3KooWKgG2394ZZWDZWAjetj1z9m6SXUTsVNZLryzbjSPrUtN9"
MiB = 1 << 20


def _size(e: ev.Event) -> int:
    return len(json.dumps(e.to_json(), default=str))


def test_a_big_message_event_is_a_short_preview_with_its_size() -> None:
    payload = {"text": "x" * MiB, "blob": list(range(100_000)), "nested": {str(i): "y" * 1000 for i in range(1000)}}
    e = ev.MessageReceived(peer_id=PEER, id="7" * 10_000, command="c" * 10_000, args=payload,
                           sender="s" * MiB, size=3 * MiB)
    assert _size(e) < 2048
    assert e.size == 3 * MiB
    assert e.args["text"].startswith("xxxx") and e.args["text"].endswith(ev.ELLIPSIS)
    assert len(e.args["text"]) <= ev.PREVIEW_STR_MAX
    assert len(e.command) <= ev.SHORT_TEXT and len(e.sender) <= ev.SHORT_TEXT
    line = human(e)
    assert line is not None and len(line) < 1024 and "3.0 MiB" in line


def test_small_values_are_kept_as_they_are() -> None:
    args = {"text": "Hello from dialer! Message #3", "n": [1, 2, {"a": None}]}
    e = ev.MessageReceived(peer_id=PEER, id="1", command="message", args=args, sender="me")
    assert e.args is args  # not even copied
    assert e.to_json()["args"] == args


@pytest.mark.parametrize("value", [
    "z" * 5000,
    list(range(10_000)),
    {f"k{i}": "v" * 300 for i in range(100)},
    [[[[[[[["deep"]]]]]]]],
    {"k" * 1000: 1, "a": ["b" * 700, {"c": "d" * 900}], "l": [{"x": "y" * 50}] * 40},
])
def test_preview_fits_its_budget_and_a_preview_of_a_preview_is_itself(value: Any) -> None:
    for budget in (64, 200, 512, 4096):
        once = ev.preview(value, budget, 200)
        assert len(json.dumps(once)) <= budget * 1.2 + 8  # the cost ignores escapes and number widths
        assert ev.preview(once, budget, 200) == once  # events are bounded again after the control socket


def test_every_event_type_is_bounded() -> None:
    """Every event class, each of its text/list/dict fields given 1 MiB: still a short line."""
    import dataclasses

    classes: list[type[ev.Event]] = []
    todo = list(ev.Event.__subclasses__())
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo.extend(cls.__subclasses__())
    assert tev.Shared in classes and ev.MessageReceived in classes
    for cls in classes:
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "ts":
                continue
            hint = str(f.type)
            if "list" in hint:
                kwargs[f.name] = ["a" * 1000] * 1000
            elif "dict" in hint or hint in ("Any", "object"):
                kwargs[f.name] = {f"k{i}": "v" * 1000 for i in range(1000)}
            elif "str" in hint:
                kwargs[f.name] = "s" * MiB
            elif "bool" in hint:
                kwargs[f.name] = True
            elif "float" in hint or "int" in hint:
                kwargs[f.name] = 1
        e = cls(**kwargs)
        assert _size(e) < 64 * 1024, f"{cls.__name__}: {_size(e)} bytes"


def test_repeat_limiter_says_it_once_then_rarely() -> None:
    lim = ev.RepeatLimiter(gap=60, max_gap=600)
    said = [(t, n) for t in range(0, 600, 5) if (n := lim.hit("peer", float(t))) is not None]
    # 120 failures in 10 minutes: said at 0 s, then after 60, 120, 240 s more (with the count)
    assert said == [(0, 1), (60, 13), (180, 37), (420, 85)]
    assert lim.hit("other", 1.0) == 1  # another peer is news
    lim.clear("peer")  # it answered: the next failure is news again
    assert lim.hit("peer", 601.0) == 1
    small = ev.RepeatLimiter(max_keys=3)
    for i in range(10):
        small.hit(str(i), 0.0)
    assert small.hit("9", 1.0) is None and small.hit("0", 1.0) == 1  # "0" was forgotten, "9" not


async def test_the_node_publishes_a_repeated_peer_failure_once_then_with_its_count() -> None:
    from punch_net.config import NodeConfig
    from punch_net.node import Node

    node = Node(NodeConfig(role="dialer", ephemeral=True))
    with node.bus.subscribe() as sub:
        for _ in range(11):
            node.peer_failed(PEER, f"dial {PEER}: its addresses failed moments ago", "discovery")
        got = [sub.receive_nowait() for _ in range(1)]
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()
    assert isinstance(got[0], ev.ErrorEvent) and got[0].repeats == 1 and got[0].peer_id == PEER
    again = ev.ErrorEvent(message="dial x: connection refused", where="discovery", peer_id=PEER, repeats=11)
    assert human(again) == (f"[red]![/red] peer {short_peer_id(PEER)} still unreachable (11 times): "
                            "dial x: connection refused")


def test_bootstrap_retry_is_one_sentence_and_then_only_now_and_then() -> None:
    def line(attempt: int) -> str | None:
        return human(ev.BootstrapRetry(addr="/ip4/127.0.0.1/tcp/51820", error="connection refused",
                                       retry_in=2.0, attempt=attempt))

    first = line(1)
    assert first == ("[yellow]…[/yellow] bootstrap node /ip4/127.0.0.1/tcp/51820 unreachable "
                     "(connection refused); next try in 2 s")
    assert [n for n in range(1, 70) if line(n)] == [1, 2, 3, 4, 8, 16, 32, 64]
    assert "still unreachable after 16 tries (connection refused)" in (line(16) or "")


def test_failure_reason_says_it_once() -> None:
    # what trio and py-libp2p make of a refused TCP connect: four wrappers, one cause
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 1)")
    try:
        try:
            try:
                raise OSError("all attempts to connect to 127.0.0.1:1 failed") from ExceptionGroup("x", [refused])
            except OSError as exc:
                raise RuntimeError(f"Failed to open TCP stream to /ip4/127.0.0.1/tcp/1: {exc}") from exc
        except RuntimeError as exc:
            raise RuntimeError("fail to open connection to peer X") from exc
    except RuntimeError as exc:
        assert failure_reason(exc) == "connection refused"
    negative = RuntimeError("Peer X recently failed all addresses (negative cache)")
    assert failure_reason(negative) == "its addresses failed moments ago (not redialed for a minute)"
    nested = RuntimeError("outer: inner detail (1 sub-exception)")
    nested.__cause__ = ValueError("inner detail")
    assert failure_reason(nested) == "outer: inner detail"
    assert failure_reason(trio.TooSlowError()) == "timed out"


def test_the_console_shows_a_big_message_as_a_preview_with_its_size() -> None:
    from punch_tui.tabs.messages import message_entry
    from punch_tui.tabs.overview import event_entry

    e = ev.MessageReceived(peer_id=PEER, id="9", command="message", args={"text": "hello " * 200_000},
                           sender="me", size=1_200_011)
    entry = message_entry(e)
    assert entry is not None and entry.kind == "received"
    assert "(1.1 MiB): hello hello" in entry.text and len(entry.text) < 400
    assert len(entry.detail()) < 2048  # the JSON pane: the bounded event
    retry = [event_entry(ev.BootstrapRetry(addr="/ip4/127.0.0.1/tcp/1", error="connection refused",
                                           retry_in=2.0, attempt=n)) for n in (1, 5, 8)]
    assert retry[1] is None and retry[0] is not None and retry[2] is not None
    assert retry[0].text == "… bootstrap node /ip4/127.0.0.1/tcp/1 unreachable (connection refused); next try in 2 s"


def test_a_peers_text_is_printed_as_is_never_read_as_markup() -> None:
    from rich.console import Console
    from rich.text import Text

    tricky = "hi [/oops] [bold]x[/bold] [link=http://evil]y"
    lines = [
        human(ev.MessageReceived(peer_id=PEER, id="1", command="message", args={"text": tricky}, sender="[/s]")),
        human(ev.MessageReceived(peer_id=PEER, id="2", command="[/c]", args={"k": tricky}, sender="s")),
        human(ev.Reply(peer_id=PEER, id="1", ok=False, error={"code": "[/e]", "message": tricky})),
        human(ev.ErrorEvent(message=f"echo to x: {tricky}", where="dialer")),
        human(tev.Available(name=tricky, size=1, info_hash="ab", providers=1)),
    ]
    console = Console(file=io.StringIO(), width=400)
    for line in lines:
        assert line is not None
        console.print(line)  # raised MarkupError before: one message ended a listener's output
        assert "[/oops]" in Text.from_markup(line).plain


def test_the_fast_path_decides_as_json_cost_does() -> None:
    """Event.__post_init__ keeps small flat payloads without calling `preview`: the shortcut
    (`_flat_fits`) must agree with `json_cost` on every flat value and never keep a value
    `preview` would shorten."""
    import random

    rng = random.Random(14)
    scalars: list[Any] = [None, True, False, 0, -7, 2**70, 1.5, "", "a", "é" * 3]

    def item() -> Any:
        if rng.random() < 0.15:
            return [1] if rng.random() < 0.5 else {"n": {"deep": 1}}  # not flat: preview decides
        if rng.random() < 0.5:
            return "s" * rng.choice([0, 1, 50, 199, 200, 201, 300])
        return rng.choice(scalars)

    for _ in range(3000):
        n = rng.randrange(0, 40)
        value: Any = ({("k" * rng.choice([1, 5, 200, 201])) + str(i): item() for i in range(n)}
                      if rng.random() < 0.5 else [item() for _ in range(n)])
        budget, str_max = rng.choice([(512, 200), (96, 96), (8192, 2048), (64, 200)])
        fits = ev._flat_fits(value, budget, str_max)
        if fits:
            assert ev.json_cost(value, budget, str_max) <= budget
            assert ev.preview(value, budget, str_max) is value
        flat = all(type(v) is not list and type(v) is not dict
                   for v in (value.values() if isinstance(value, dict) else value))
        if flat:
            assert fits == (ev.json_cost(value, budget, str_max) <= budget), value
