"""Where each top-level ``pydesk`` command is defined, so that ``main`` registers only the one
being run.

Building a Typer command reads its function's signature and type hints (about 0.7 ms a
function here); building all of them for every invocation cost ~70 ms of the 150 ms start-up
budget (docs/cli.md). The table below is the one list of top-level commands, in the order of
``pydesk --help``; :func:`register` adds one of them (its module imported only then), or all of
them when argv names none (``--help``, a typo that needs click's "did you mean"...).

What it must never do: define a command (each module keeps its own) or change one.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

import typer
from typer.main import get_command_name


class Kind(Enum):
    COMMAND = "command"    # the command of that name on a module's Typer app
    FUNCTION = "function"  # a plain function, registered as a command
    GROUP = "group"        # a Typer sub-app


@dataclass(frozen=True)
class Entry:
    name: str
    module: str
    attribute: str
    kind: Kind


def _commands(module: str, *names: str) -> tuple[Entry, ...]:
    return tuple(Entry(name, module, "app", Kind.COMMAND) for name in names)


# Commands before groups: the order Typer lists them in.
ENTRIES: tuple[Entry, ...] = (
    *_commands("pydesk.cli.containers", "run", "ps", "logs", "exec", "stop", "start",
               "restart", "rm", "inspect"),
    *_commands("pydesk.cli.ports", "port", "open"),
    *_commands("pydesk.cli.images", "pull", "images", "rmi"),
    Entry("doctor", "pydesk.cli.doctor", "doctor", Kind.FUNCTION),
    Entry("version", "pydesk.cli.main", "version", Kind.FUNCTION),
    Entry("vm", "pydesk.cli.vm", "vm_app", Kind.GROUP),
    Entry("volume", "pydesk.cli.objects", "volume_app", Kind.GROUP),
    Entry("network", "pydesk.cli.objects", "network_app", Kind.GROUP),
    Entry("engine", "pydesk.cli.engine", "engine_app", Kind.GROUP),
    Entry("context", "pydesk.cli.contexts", "context_app", Kind.GROUP),
)
NAMES = frozenset(entry.name for entry in ENTRIES)
# The root callback's options that take a value (main.root): the command name comes after them.
ROOT_VALUE_OPTIONS = ("-H", "--host", "--mode")
ROOT_FLAGS = ("--debug",)


@dataclass(frozen=True)
class Invocation:
    """What the root options of argv say: the top-level command (None when argv names none
    that is known: no command, ``--help``, an unknown option or command) and ``-H``'s value."""

    command: str | None
    host: str | None = None


def invoked(argv: Sequence[str]) -> Invocation:
    """The top-level command ``argv`` runs (after the root options), and ``-H``/``--host``."""
    rest: Iterator[str] = iter(argv)
    host: str | None = None
    for arg in rest:
        if arg in ROOT_FLAGS:
            continue
        if arg in ROOT_VALUE_OPTIONS:
            value = next(rest, None)
            host = value if arg != "--mode" else host
            continue
        if arg.startswith("--mode="):
            continue
        if arg.startswith("--host=") or (arg.startswith("-H") and not arg.startswith("--")):
            host = arg.removeprefix("--host=").removeprefix("-H")  # a value attached
            continue
        return Invocation(arg if arg in NAMES else None, host)
    return Invocation(None, host)


def _command_info(app: typer.Typer, name: str) -> typer.models.CommandInfo:
    for info in app.registered_commands:
        callback_name = info.callback.__name__ if info.callback else ""
        if (info.name or get_command_name(callback_name)) == name:
            return info
    raise LookupError(f"no command {name!r} on {app.info.name or app!r}")


def register(app: typer.Typer, name: str | None) -> None:
    """Add the top-level command ``name`` to ``app``, or every command when ``name`` is None."""
    for entry in ENTRIES:
        if name is not None and entry.name != name:
            continue
        target = getattr(importlib.import_module(entry.module), entry.attribute)
        if entry.kind is Kind.GROUP:
            app.add_typer(target, name=entry.name)
        elif entry.kind is Kind.FUNCTION:
            app.command()(target)
        else:
            app.registered_commands.append(_command_info(target, entry.name))
