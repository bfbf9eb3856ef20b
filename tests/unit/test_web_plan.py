"""Where the web console goes (on for the monitor by default, `--web-port 0` off, another
interface flagged as exposed) and how the CLI words its events."""

from __future__ import annotations

import pytest

from punch_net import events as ev
from punch_net.cli.render import human
from punch_net.config import NodeConfig
from punch_net.ops.web import DEFAULT_WEB_PORT, WebPlan, is_loopback, plan


def cfg(role: str, port: int | None = None, host: str | None = None) -> NodeConfig:
    c = NodeConfig(role=role)
    c.web_port, c.web_host = port, host
    return c


def test_monitor_default_is_8080_on_loopback_with_fallback() -> None:
    assert DEFAULT_WEB_PORT == 8080
    assert plan(cfg("monitor")) == WebPlan("127.0.0.1", 8080, fallback=True, exposed=False)


@pytest.mark.parametrize("role", ["server", "listener", "dialer", "torrent-server", "torrent-client"])
def test_other_roles_are_off_unless_asked(role: str) -> None:
    assert plan(cfg(role)) is None
    assert plan(cfg(role, 9000)) == WebPlan("127.0.0.1", 9000, fallback=False, exposed=False)


def test_port_zero_is_off_and_another_host_is_exposed() -> None:
    assert plan(cfg("monitor", 0)) is None
    assert plan(cfg("monitor", None, "0.0.0.0")) == WebPlan("0.0.0.0", 8080, fallback=True, exposed=True)
    assert plan(cfg("listener", 8081, "::1")) == WebPlan("::1", 8081, fallback=False, exposed=False)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


def test_cli_words_fallback_and_exposure() -> None:
    line = human(ev.WebServing(url="http://127.0.0.1:41000/?token=t", token="t", busy_port=8080))
    assert line is not None and "http://127.0.0.1:41000/?token=t" in line and "8080 is busy" in line
    warn = human(ev.WebExposed(host="0.0.0.0", port=8080))
    assert warn is not None and "0.0.0.0:8080" in warn and "token" in warn
