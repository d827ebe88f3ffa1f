"""The hand-written command-line parser and signal names: runc's spelling."""

from __future__ import annotations

import pytest

from pydeskd.runtime import cli
from pydeskd.runtime.container import parse_signal
from pydeskd.runtime.errors import RuntimeFailure


def test_global_options_stop_at_the_command() -> None:
    opts, rest = cli.parse(["--root", "/r", "--log=/l", "--debug", "create", "-b", "x", "id"],
                           cli.GLOBAL_OPTIONS, stop_at_positional=True)
    assert opts == {"root": "/r", "log": "/l", "debug": True}
    assert rest == ["create", "-b", "x", "id"]


def test_command_options_short_long_single_dash_and_equals() -> None:
    for args in (["-b", "/b", "--pid-file", "/p", "c1"], ["--bundle=/b", "-pid-file", "/p", "c1"],
                 ["c1", "--bundle", "/b", "--pid-file=/p"]):
        opts, pos = cli.parse(args, cli.CREATE_OPTIONS, stop_at_positional=False)
        assert opts == {"bundle": "/b", "pid-file": "/p"} and pos == ["c1"], args


def test_exec_stops_at_the_first_positional_and_collects_repeats() -> None:
    options = cli.COMMANDS["exec"][0]
    opts, pos = cli.parse(["-e", "A=1", "--env", "B=2", "-t", "c1", "sh", "-c", "--env"],
                          options, stop_at_positional=True)
    assert opts == {"env": ["A=1", "B=2"], "tty": True}
    assert pos == ["c1", "sh", "-c", "--env"]


def test_unknown_and_incomplete_options_are_usage_errors() -> None:
    with pytest.raises(cli.UsageError, match="not defined: --nope"):
        cli.parse(["--nope"], cli.CREATE_OPTIONS, stop_at_positional=False)
    with pytest.raises(cli.UsageError, match="needs an argument"):
        cli.parse(["--bundle"], cli.CREATE_OPTIONS, stop_at_positional=False)


def test_help_mentions_user_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["create", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--console-socket" in out and "User namespaces" in out


def test_errors_are_one_line_and_exit_one(capsys: pytest.CaptureFixture[str],
                                          tmp_path: object) -> None:
    assert cli.main(["--root", str(tmp_path), "state", "ghost"]) == 1
    err = capsys.readouterr().err
    assert err == "pydesk-runc: container does not exist: ghost\n"


def test_signals_by_name_and_number() -> None:
    assert parse_signal("SIGKILL") == 9
    assert parse_signal("term") == 15
    assert parse_signal("10") == 10
    assert parse_signal("SIGRTMIN+2") == 36
    for bad in ("SIGNOPE", "0", "65"):
        with pytest.raises(RuntimeFailure):
            parse_signal(bad)
