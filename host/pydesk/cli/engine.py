"""``pydesk engine``: which engine the CLI talks to (``which``, ``env``), and the native engine
of passthrough mode (``start``, ``stop``: a pydeskd in the background, Linux, root).

What it must never do: start an engine the user did not ask for: ``start`` asks first (or takes
``--yes``); other commands only say how to start one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pydesk.cli.context import engine_errors, fail, options

engine_app = typer.Typer(help="The engine the CLI talks to; the native one of passthrough mode.",
                         no_args_is_help=True)


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


DataRoot = Annotated[Path, typer.Option("--data-root", help="pydeskd's state.")]
ExecRoot = Annotated[Path, typer.Option(
    "--exec-root", help="pydeskd's runtime directory: its socket is EXEC_ROOT/docker.sock "
                        "(the passthrough socket with the default).")]


@engine_app.command("start")
def start(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
    = False,
    data_root: DataRoot = Path("/var/lib/pydesk"),
    exec_root: ExecRoot = Path("/run/pydesk"),
    config_file: Annotated[Path | None, typer.Option(
        "--config-file", help="pydeskd's daemon.json (default /etc/pydesk/daemon.json).")]
    = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for /_ping.")] = 30.0,
) -> None:
    """Start a native pydeskd in the background (passthrough mode, Linux, as root)."""
    from pydesk.cli import native
    from pydesk.endpoint import ping_unix

    if not sys.platform.startswith("linux"):
        raise fail("error: the native engine needs a Linux host\nhint: pydesk vm start")
    paths = native.NativePaths(data_root, exec_root, config_file)
    if ping_unix(paths.socket):
        print(f"an engine already answers on unix://{paths.socket}")
        return
    if os.geteuid() != 0:
        raise fail("error: the native engine runs as root (namespaces, mounts, cgroups)\n"
                   "hint: sudo pydesk engine start")
    if not yes:
        question = (f"Start pydeskd as root, in the background, on unix://{paths.socket} "
                    f"(state in {paths.data_root})?")
        if not sys.stdin.isatty():
            raise fail(f"error: {question} Not confirmed (no terminal)\n"
                       "hint: pydesk engine start --yes")
        if not typer.confirm(question, default=False):
            raise fail("aborted")
    try:
        pid = native.start(paths, ping_unix, native.Spawner(native.spawn_detached),
                           program=native.pydeskd_program(), timeout=timeout)
    except native.NativeError as e:
        raise fail(f"error: {e.message}\nhint: {e.hint}") from None
    print(f"pydeskd (pid {pid}) answers on unix://{paths.socket}")
    print(f"  log: {paths.log}; stop it: pydesk engine stop")


@engine_app.command("stop")
def stop(
    exec_root: ExecRoot = Path("/run/pydesk"),
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 30.0,
) -> None:
    """Stop the native pydeskd that `pydesk engine start` started (its containers keep running
    and are found again at the next start)."""
    from pydesk.cli import native
    from pydesk.endpoint import ping_unix

    paths = native.NativePaths(exec_root=exec_root)
    pid = native.read_pid(paths.pidfile)
    if pid is not None and os.geteuid() != 0 and native.cmdline_of(pid):
        raise fail("error: the native engine runs as root\nhint: sudo pydesk engine stop")
    try:
        stopped = native.stop(paths, native.Spawner(native.spawn_detached), timeout=timeout)
    except PermissionError:
        raise fail("error: not allowed to signal pydeskd\nhint: sudo pydesk engine stop") \
            from None
    if stopped is not None:
        print(f"pydeskd (pid {stopped}) stopped")
    elif ping_unix(paths.socket):
        raise fail(f"error: an engine answers on unix://{paths.socket} but {paths.pidfile} "
                   "names no pydeskd\nhint: stop it the way it was started")
    else:
        print("no native engine runs")
