"""The `pydesk` entry point: the Typer app that gathers every command group.

Start-up (150 ms of the CLI's own CPU time, docs/cli.md): the listing commands take
``context.fast_path`` without Typer; every other run registers only the command it invokes
(``commands.register``), and Typer coerces its parameters without pydantic
(``coercion.install``).

Errors: a ``VmError`` (or any other exception) is one line, ``error: ...`` plus ``hint: ...``;
the traceback is shown only with ``--debug`` (or PYDESK_DEBUG=1).
"""

from __future__ import annotations

import os
import sys

import typer

from pydesk import __version__
from pydesk.cli import coercion, commands, context

_debug = {"on": os.environ.get("PYDESK_DEBUG") == "1"}


def root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
         host: str | None = typer.Option(None, "--host", "-H",
                                         help="Engine socket (else PYDESK_HOST, then --mode)."),
         mode: str | None = typer.Option(None, "--mode",
                                         help="auto|native|vm (else ~/.pydesk/config.json).")
         ) -> None:
    """pydesk: a Docker Desktop-style container engine."""
    context.options.update(host=host, mode=mode)
    if debug:
        _debug["on"] = True


def version() -> None:
    """Show pydesk's version."""
    typer.echo(f"pydesk {__version__}")


def build_app(command: str | None = None) -> typer.Typer:
    """The ``pydesk`` Typer app with the top-level ``command`` registered (every command for
    None: ``pydesk --help`` lists them all)."""
    app = typer.Typer(
        name="pydesk",
        help="pydesk: a Docker Desktop-style container engine (QEMU VM, or native on Linux).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain help, as docker's: rich's help formatter alone costs ~50 ms of start-up.
        rich_markup_mode=None,
    )
    app.callback()(root)
    commands.register(app, command)
    return app


def main() -> None:
    argv = sys.argv[1:]
    fast = context.fast_path(argv)
    if fast is not None:
        sys.exit(fast)
    invocation = commands.invoked(argv)
    coercion.install()
    context.skip_docker_ssh(invocation.host or os.environ.get("PYDESK_HOST"))
    app = build_app(invocation.command)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if _debug["on"]:
            raise
        hint = getattr(e, "hint", "")
        message = getattr(e, "message", None) or str(e) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        print(f"hint: {hint}" if hint else "hint: run with --debug for the traceback",
              file=sys.stderr)
        sys.exit(1)
