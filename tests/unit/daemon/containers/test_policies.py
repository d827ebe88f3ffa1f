"""Restart decisions (fake clock: durations passed in), signal parsing, detach keys, framing."""

from __future__ import annotations

import signal

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.containers.attach import DetachScanner, frame, framed, parse_detach_keys
from pydeskd.daemon.containers.restart import Policy, RestartManager, RestartPolicy
from pydeskd.daemon.containers.signals import parse_signal
from pydeskd.shim.protocol import Stream


def test_policy_parsing() -> None:
    assert RestartPolicy.from_api(None).name is Policy.NO
    assert RestartPolicy.from_api({"Name": ""}).name is Policy.NO
    assert RestartPolicy.from_api({"Name": "on-failure", "MaximumRetryCount": 3}) == \
        RestartPolicy(Policy.ON_FAILURE, 3)
    with pytest.raises(InvalidArgument, match="unknown policy 'sometimes'"):
        RestartPolicy.from_api({"Name": "sometimes"})
    with pytest.raises(InvalidArgument, match="maximum retry count can only be used"):
        RestartPolicy.from_api({"Name": "always", "MaximumRetryCount": 2})


def test_backoff_doubles_and_resets_after_a_long_run() -> None:
    rm = RestartManager(RestartPolicy(Policy.ALWAYS))
    delays = [rm.should_restart(0, False, n, ran_for=0.5) for n in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 60.0  # capped at a minute
    assert rm.should_restart(0, False, 12, ran_for=10.0) == 0.1


def test_policies_decide() -> None:
    assert RestartManager(RestartPolicy()).should_restart(1, False, 0, 0) is None
    always = RestartManager(RestartPolicy(Policy.ALWAYS))
    assert always.should_restart(0, True, 0, 0) == 0.1  # docker kill does not stop "always"
    always.cancel()  # docker stop does
    assert always.should_restart(0, False, 0, 0) is None
    unless = RestartManager(RestartPolicy(Policy.UNLESS_STOPPED))
    assert unless.should_restart(0, True, 0, 0) is None
    assert unless.should_restart(0, False, 0, 0) == 0.1
    onf = RestartManager(RestartPolicy(Policy.ON_FAILURE, 2))
    assert onf.should_restart(0, False, 0, 0) is None
    assert onf.should_restart(1, False, 0, 0) == 0.1
    assert onf.should_restart(1, False, 1, 0) == 0.2
    assert onf.should_restart(1, False, 2, 0) is None
    assert RestartManager(RestartPolicy(Policy.ON_FAILURE)).should_restart(7, False, 99, 0)


def test_daemon_start_rules() -> None:
    assert RestartPolicy(Policy.ALWAYS).restarts_at_daemon_start(True, 0)
    assert not RestartPolicy(Policy.UNLESS_STOPPED).restarts_at_daemon_start(True, 0)
    assert RestartPolicy(Policy.UNLESS_STOPPED).restarts_at_daemon_start(False, 0)
    assert not RestartPolicy(Policy.ON_FAILURE).restarts_at_daemon_start(False, 0)
    assert RestartPolicy(Policy.ON_FAILURE).restarts_at_daemon_start(False, 1)
    assert not RestartPolicy().restarts_at_daemon_start(False, 1)


@pytest.mark.parametrize(("text", "number"), [
    ("SIGHUP", 1), ("HUP", 1), ("hup", 1), ("1", 1), ("SIGKILL", 9), ("kill", 9),
    ("SIGTERM", 15), (15, 15), ("", signal.SIGKILL), (None, signal.SIGKILL),
    ("SIGRTMIN+1", signal.SIGRTMIN + 1), ("SIGUSR1", signal.SIGUSR1),
])
def test_signals(text: str | int | None, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["SIGNOPE", "0", "99", "-1", "SIGRTMIN+99"])
def test_bad_signals(text: str) -> None:
    with pytest.raises(InvalidArgument, match="Invalid signal"):
        parse_signal(text)


def test_default_signal() -> None:
    assert parse_signal("", default=signal.SIGTERM) == signal.SIGTERM


def test_detach_keys() -> None:
    assert parse_detach_keys(None) == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x") == b"\x01x"
    assert parse_detach_keys("ctrl-@,ctrl-_") == b"\x00\x1f"
    with pytest.raises(InvalidArgument, match="Invalid detach keys"):
        parse_detach_keys("ctrl-aa")


def test_detach_scanner_holds_partial_matches() -> None:
    scan = DetachScanner(b"\x10\x11")
    assert scan.feed(b"ab\x10") == b"ab"
    assert scan.feed(b"c") == b"\x10c"  # not the sequence: passed on
    assert scan.feed(b"\x10\x10") == b"\x10"
    assert not scan.detached
    assert scan.feed(b"\x11zz") == b""
    assert scan.detached


def test_framing() -> None:
    assert frame(Stream.STDERR, b"hi") == b"\x02\x00\x00\x00\x00\x00\x00\x02hi"
    chunks = [(Stream.STDOUT, b"a"), (Stream.STDERR, b""), (Stream.STDERR, b"b")]
    assert b"".join(framed(iter(chunks), tty=False)) == \
        b"\x01\x00\x00\x00\x00\x00\x00\x01a\x02\x00\x00\x00\x00\x00\x00\x01b"
    assert b"".join(framed(iter(chunks), tty=True)) == b"ab"
