"""The shim's first step: start ``runtime create`` as early as it can.

Every container start waits for the shim, and ``runtime create`` takes ~35 ms (runc here) while
the rest of the shim (protocol, server, control socket: ~20 ms of imports) is not needed until
it returns. So this module imports only what spawning needs: the shim's process calls
:func:`spawn_create` first and imports the rest while the runtime works
(:meth:`pydeskd.shim.server.Shim.create` then takes over the :class:`Launch`).

The container's stdio is made here: pipes (or, when config.json asks for a terminal, a console
socket the runtime sends the pty master to). This module must never import the protocol or
the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from pydeskd.shim.paths import StatePaths
from pydeskd.shim.runtime import Runtime

# typing and dataclasses cost ~8 ms of start-up, measured with -X importtime: mypy only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import NamedTuple

    from pydeskd.shim.children import Child, Children
else:
    from pydeskd.runtime.record import NamedTuple

RUNTIME_TIMEOUT = 60.0


class ShimConfig(NamedTuple):
    id: str
    bundle: Path
    state_dir: Path
    runtime: Path
    runtime_root: Path
    stdin: bool = False
    log_path: Path | None = None
    log_max_size: int = 0
    log_max_files: int = 1


class CreateFailed(Exception):
    """The container could not be created; the message is the runtime's error."""


class Launch:
    """A ``runtime create`` under way, and the shim's ends of the container's stdio.

    A plain class, not a dataclass (see TYPE_CHECKING above): its fds are handed over one by
    one, so it is mutable."""

    def __init__(self, child: Child, since: float, tty: bool, *,
                 stdin_fd: int | None = None, stdout_fd: int | None = None,
                 stderr_fd: int | None = None, console: socket.socket | None = None,
                 log_offset: int = 0) -> None:
        self.child = child
        self.since = since              # monotonic time before the spawn (for Children.watch)
        self.tty = tty
        self.stdin_fd = stdin_fd        # our end of the stdin pipe (--stdin)
        self.stdout_fd = stdout_fd      # read ends of the output pipes (no tty)
        self.stderr_fd = stderr_fd
        self.console = console          # the console socket's listener (tty)
        self.log_offset = log_offset    # where this call's messages start in the runtime's --log

    def close(self) -> None:
        """Releases what was not handed over (after a failure)."""
        for fd in (self.stdin_fd, self.stdout_fd, self.stderr_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin_fd = self.stdout_fd = self.stderr_fd = None


def terminal_requested(bundle: Path) -> bool:
    """Whether config.json asks for a terminal (then the runtime sends us a pty master)."""
    try:
        config = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CreateFailed(f"cannot read {bundle / 'config.json'}: {e}") from None
    process = config.get("process") if isinstance(config, dict) else None
    return bool(isinstance(process, dict) and process.get("terminal"))


def runtime_for(config: ShimConfig) -> Runtime:
    return Runtime(config.runtime, config.runtime_root, StatePaths(config.state_dir).runtime_log)


def spawn_create(config: ShimConfig, children: Children) -> Launch:
    """Starts ``runtime create`` with the container's stdio. Raises CreateFailed (nothing
    started then) or OSError."""
    paths = StatePaths(config.state_dir)
    tty = terminal_requested(config.bundle)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    theirs = {"stdin": null, "stdout": null, "stderr": null}
    ours: dict[str, int] = {}
    console = None
    try:
        if tty:
            from pydeskd.shim import console as console_mod

            try:
                console = console_mod.listen(paths.console_socket(0))
            except console_mod.ConsoleError as e:
                raise CreateFailed(str(e)) from None
        else:
            if config.stdin:
                theirs["stdin"], ours["stdin"] = os.pipe()
            ours["stdout"], theirs["stdout"] = os.pipe()
            ours["stderr"], theirs["stderr"] = os.pipe()
        offset = _size(paths.runtime_log)
        since = time.monotonic()
        argv = runtime_for(config).create(config.id, config.bundle, paths.init_pid,
                                          paths.console_socket(0) if tty else None)
        child = children.spawn(argv, cwd=str(config.bundle), **theirs)
    except BaseException:
        for fd in ours.values():
            os.close(fd)
        if console is not None:
            from pydeskd.shim import console as console_mod

            console_mod.close(console, paths.console_socket(0))
        raise
    finally:
        for fd in set(theirs.values()):
            os.close(fd)
    return Launch(child=child, since=since, tty=tty, stdin_fd=ours.get("stdin"),
                  stdout_fd=ours.get("stdout"), stderr_fd=ours.get("stderr"),
                  console=console, log_offset=offset)


def abandon(launch: Launch, config: ShimConfig, children: Children) -> None:
    """The shim cannot go on: waits for the runtime and deletes what it made (if it did)."""
    launch.close()
    if launch.console is not None:
        launch.console.close()
    with contextlib.suppress(Exception):
        if children.finish(launch.child, RUNTIME_TIMEOUT) == 0:
            children.run(runtime_for(config).delete(config.id, force=True), timeout=30)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
