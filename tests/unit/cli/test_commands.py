"""Registering only the invoked command (``pydesk.cli.commands``): the table is the CLI, in the
order of ``pydesk --help``; a command alone is the same command as in the full app; argv's
root options are read as click reads them."""

from __future__ import annotations

import importlib

import pytest
import typer
import typer.core
import typer.main
from typer import _click

from pydesk.cli import commands
from pydesk.cli.commands import Invocation, invoked
from pydesk.cli.main import build_app


def group(app: typer.Typer) -> typer.core.TyperGroup:
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    return command


def test_the_table_lists_every_command_in_help_order() -> None:
    assert list(group(build_app()).commands) == [e.name for e in commands.ENTRIES]
    # Groups after commands: the order Typer lists them in.
    kinds = [e.kind is commands.Kind.GROUP for e in commands.ENTRIES]
    assert kinds == sorted(kinds)


@pytest.mark.parametrize("module", ["pydesk.cli.containers", "pydesk.cli.ports",
                                    "pydesk.cli.images"])
def test_every_command_a_module_defines_is_in_the_table(module: str) -> None:
    app = importlib.import_module(module).app
    defined = {info.name or typer.main.get_command_name(info.callback.__name__)
               for info in app.registered_commands if info.callback}
    listed = {e.name for e in commands.ENTRIES if e.module == module}
    assert defined == listed


def help_of(command: _click.Command, name: str) -> str:
    with _click.Context(command, info_name="pydesk") as parent:
        assert isinstance(command, typer.core.TyperGroup)
        sub = command.commands[name]
        with _click.Context(sub, info_name=name, parent=parent) as ctx:
            return sub.get_help(ctx)


@pytest.mark.parametrize("name", sorted(commands.NAMES))
def test_a_command_alone_is_the_one_of_the_full_app(name: str) -> None:
    alone = group(build_app(name))
    assert list(alone.commands) == [name]
    assert help_of(alone, name) == help_of(group(build_app()), name)
    assert [p.name for p in alone.params] == ["debug", "host", "mode"]


@pytest.mark.parametrize(("argv", "expected"), [
    ([], Invocation(None)),
    (["--help"], Invocation(None)),
    (["stop", "x"], Invocation("stop")),
    (["-H", "unix:///s", "stop", "x"], Invocation("stop", "unix:///s")),
    (["-Hunix:///s", "--debug", "vm", "status"], Invocation("vm", "unix:///s")),
    (["--host=ssh://h", "--mode", "vm", "ps", "-a"], Invocation("ps", "ssh://h")),
    (["--host", "/a", "--host", "/b", "logs"], Invocation("logs", "/b")),
    (["--mode=native", "-H", "/s", "--debug", "volume", "ls"], Invocation("volume", "/s")),
    (["--mode", "stop", "version"], Invocation("version")),  # "stop" is --mode's value
    (["stp", "x"], Invocation(None)),  # unknown: all registered, for click's "did you mean"
    (["--bogus", "stop"], Invocation(None)),
    (["-H"], Invocation(None)),
    (["run", "busybox", "stop"], Invocation("run")),
])
def test_invoked_reads_the_root_options(argv: list[str], expected: Invocation) -> None:
    assert invoked(argv) == expected
