"""The control socket's hello: a client refuses what is not Punch, and says so when the
node speaks another version of the protocol."""

from __future__ import annotations

from punch_net.ops.control import PROTOCOL, hello_problem


def test_hello_of_this_version_is_accepted() -> None:
    assert hello_problem({"type": "hello", "protocol": PROTOCOL}) == ""


def test_other_version_says_which_and_what_to_do() -> None:
    problem = hello_problem({"type": "hello", "protocol": "punch-control/1"})
    assert "punch-control/1" in problem and PROTOCOL in problem and "same Punch version" in problem


def test_not_punch_at_all() -> None:
    for hello in (None, [], {"protocol": "http/1.1"}, {"type": "hello"}):
        assert hello_problem(hello) == "not a Punch control socket"
