"""``pydesk context``: which engine the CLI uses and why; ``pydesk context docker [--use]
[--remove]``: the docker CLI's context ``pydesk`` on the VM's host socket.

Thin by rule: the selection is :func:`pydesk.endpoint.explain`, the files are
:mod:`pydesk.dockercontext`. What it must never do: change the docker CLI's current context
without ``--use``, or run the docker CLI.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pydesk.cli.context import options

context_app = typer.Typer(help="Which engine pydesk uses and why (without a command); `context "
                          "docker`: the docker CLI's context `pydesk`.",
                          invoke_without_command=True)


@context_app.callback()
def show(ctx: typer.Context) -> None:
    """Show which engine the CLI uses and why (no subcommand), and the docker context."""
    if ctx.invoked_subcommand is None:
        show_engine()


def show_engine() -> None:
    """``pydesk context``'s work, shared with the fast path (context.fast_path)."""
    from pydesk import dockercontext
    from pydesk.endpoint import explain, vm_socket

    selection = explain(options["host"], options["mode"])
    if selection.engine is not None:
        print(f"engine: {selection.engine.base_url} ({selection.engine.source})")
    else:
        print("engine: none answers")
    print(f"why: {selection.reason()}")
    config_dir = dockercontext.docker_config_dir()
    try:
        stored = dockercontext.read_context(config_dir)
        current = dockercontext.current_context(config_dir)
    except ValueError as e:
        print(f"docker context: {e}")
    else:
        if stored is None:
            print(f"docker context {dockercontext.CONTEXT_NAME}: not created "
                  "(`pydesk context docker`)")
        else:
            stale = "" if stored.host == f"unix://{vm_socket()}" else \
                f" (not pydesk's socket unix://{vm_socket()}: `pydesk context docker` fixes it)"
            print(f"docker context {stored.name}: {stored.host}{stale}")
        print(f"docker's current context: {current}")
    if selection.engine is None:
        error = selection.error()
        print(f"hint: {error.hint}", file=sys.stderr)
        raise typer.Exit(1)


@context_app.command("docker")
def docker_context(
    use: Annotated[bool, typer.Option("--use", help="Also make it the docker CLI's current "
                                                    "context (docker context use pydesk).")]
    = False,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the context instead.")]
    = False,
) -> None:
    """Create (or update) the docker CLI's context `pydesk` on pydesk's host socket."""
    from pydesk import dockercontext
    from pydesk.endpoint import vm_socket

    config_dir = dockercontext.docker_config_dir()
    name = dockercontext.CONTEXT_NAME
    if remove:
        was_current = dockercontext.current_context(config_dir) == name
        if not dockercontext.remove_context(config_dir):
            print(f"docker context {name}: does not exist")
            return
        print(f"docker context {name} removed" +
              (" (the docker CLI's current context is `default` again)" if was_current else ""))
        return
    host = f"unix://{vm_socket()}"
    path = dockercontext.write_context(config_dir, host)
    print(f"docker context {name} -> {host}")
    print(f"  (written to {path})")
    if use:
        previous = dockercontext.current_context(config_dir)
        dockercontext.use_context(config_dir, name)
        print(f'Current context is now "{name}": every docker command uses pydesk')
        if previous != name:
            print(f"  back to the previous one: docker context use {previous}")
    else:
        print("Use it with:")
        print(f"  docker --context {name} ps          # one command")
        print(f"  docker context use {name}           # every docker command from now on")
