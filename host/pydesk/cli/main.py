"""The `pydesk` entry point: the Typer app that gathers every command group.

Errors: a ``VmError`` (or any other exception) is one line, ``error: ...`` plus ``hint: ...``;
the traceback is shown only with ``--debug`` (or PYDESK_DEBUG=1).
"""

from __future__ import annotations

import os
import sys

import typer

from pydesk import __version__
from pydesk.cli.vm import vm_app

app = typer.Typer(
    name="pydesk",
    help="pydesk: a Docker Desktop-style container engine (QEMU VM, or native on Linux).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(vm_app, name="vm")

_debug = {"on": os.environ.get("PYDESK_DEBUG") == "1"}


@app.callback()
def root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    """pydesk: a Docker Desktop-style container engine."""
    if debug:
        _debug["on"] = True


@app.command()
def version() -> None:
    """Show pydesk's version."""
    typer.echo(f"pydesk {__version__}")


def main() -> None:
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
