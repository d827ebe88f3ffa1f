"""The `pydesk` entry point: the Typer app that gathers every command group."""

from __future__ import annotations

import typer

from pydesk import __version__

app = typer.Typer(
    name="pydesk",
    help="pydesk: a Docker Desktop-style container engine (QEMU VM, or native on Linux).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Show pydesk's version."""
    typer.echo(f"pydesk {__version__}")


def main() -> None:
    app()
