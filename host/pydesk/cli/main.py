"""The `pydesk` entry point: the Typer app that gathers every command group.

Errors: a ``VmError`` (or any other exception) is one line, ``error: ...`` plus ``hint: ...``;
the traceback is shown only with ``--debug`` (or PYDESK_DEBUG=1).
"""

from __future__ import annotations

import os
import sys

import typer

from pydesk import __version__
from pydesk.cli import containers, context, images, ports
from pydesk.cli.contexts import context_app
from pydesk.cli.doctor import doctor
from pydesk.cli.engine import engine_app
from pydesk.cli.objects import network_app, volume_app
from pydesk.cli.vm import vm_app

app = typer.Typer(
    name="pydesk",
    help="pydesk: a Docker Desktop-style container engine (QEMU VM, or native on Linux).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, as docker's: rich's help formatter alone costs ~50 ms of start-up (docs/cli.md).
    rich_markup_mode=None,
)
app.add_typer(vm_app, name="vm")
# The docker-style commands live at the top level, as docker's do.
app.registered_commands.extend(containers.app.registered_commands)
app.registered_commands.extend(ports.app.registered_commands)
app.registered_commands.extend(images.app.registered_commands)
app.add_typer(volume_app, name="volume")
app.add_typer(network_app, name="network")
app.add_typer(engine_app, name="engine")
app.add_typer(context_app, name="context")
app.command()(doctor)

_debug = {"on": os.environ.get("PYDESK_DEBUG") == "1"}


@app.callback()
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


@app.command()
def version() -> None:
    """Show pydesk's version."""
    typer.echo(f"pydesk {__version__}")


def main() -> None:
    fast = context.fast_path(sys.argv[1:])
    if fast is not None:
        sys.exit(fast)
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
