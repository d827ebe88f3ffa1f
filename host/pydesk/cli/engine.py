"""``pydesk engine``: which engine the CLI talks to, and why (flag, env, native or VM).

What it must never do: start or stop an engine.
"""

from __future__ import annotations

import typer

from pydesk.cli.context import engine_errors, options

engine_app = typer.Typer(help="The engine the CLI talks to.", no_args_is_help=True)


@engine_app.command("which")
@engine_errors()
def which() -> None:
    """Print the engine's address and how it was chosen."""
    from pydesk.endpoint import resolve

    engine = resolve(options["host"], options["mode"])
    print(f"{engine.base_url}\t({engine.source})")


@engine_app.command("env")
@engine_errors()
def env() -> None:
    """Print the shell line that points the docker CLI (and docker-py) at this engine."""
    from pydesk.endpoint import resolve

    engine = resolve(options["host"], options["mode"])
    print(f"export DOCKER_HOST={engine.base_url}")
