"""Reading, writing, making and removing cgroup files and directories, with errors that name them.

Shared by the v1 and v2 back ends. Only paths handed in by them are touched.
"""

from __future__ import annotations

import errno
import os
import time

from pydeskd.runtime.errors import RuntimeFailure, SetupFailed

TYPE_CHECKING = False  # collections.abc is for mypy only: start-up time
if TYPE_CHECKING:
    from collections.abc import Callable

REMOVE_TIMEOUT = 2.0  # seconds destroy() waits for exiting processes to leave a cgroup


def write(directory: str, name: str, value: str) -> None:
    """Writes ``value`` to a cgroup file; raises :class:`SetupFailed` naming file and value."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except FileNotFoundError as err:
        controller = name.split(".", maxsplit=1)[0]
        raise SetupFailed(f"cgroup: {path} does not exist (is the {controller} controller "
                          "available there?)") from err
    except OSError as err:
        raise SetupFailed(f"cgroup: writing {value!r} to {path}: {err.strerror}") from err


def read(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as err:
        raise RuntimeFailure(f"cgroup: reading {path}: {err.strerror}") from err


def procs(directory: str) -> list[int]:
    """The pids in ``directory``'s cgroup.procs; empty if the cgroup is gone."""
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def make_dirs(base: str, leaf: str, mkdir: Callable[[str], None] = os.mkdir,
              rmdir: Callable[[str], None] = os.rmdir) -> list[str]:
    """Makes ``leaf`` and its missing parents below ``base``; returns the ones made, top first.

    ``mkdir``/``rmdir`` are replaced in tests by ones that also make/remove the files the
    kernel would.
    Raises :class:`SetupFailed` after removing what it made.
    """
    made: list[str] = []
    rel = os.path.relpath(leaf, base)
    if rel.startswith(".."):
        raise SetupFailed(f"cgroup: {leaf} is not below {base}")
    current = base
    try:
        for part in rel.split("/") if rel != "." else []:
            current = os.path.join(current, part)
            try:
                mkdir(current)
                made.append(current)
            except FileExistsError:
                pass
    except OSError as err:
        remove_dirs(list(reversed(made)), strict=False, rmdir=rmdir)
        raise SetupFailed(f"cgroup: creating {current}: {err.strerror}") from err
    return made


def remove_dirs(dirs: list[str], strict: bool, timeout: float = REMOVE_TIMEOUT,
                rmdir: Callable[[str], None] = os.rmdir) -> list[str]:
    """Removes each directory, in order; returns those that could not be removed.

    ``strict`` directories are the container's own: cgroups made inside them (by the container,
    through its cgroup namespace) go too, and EBUSY (processes still exiting) is waited out up
    to ``timeout``. Otherwise a non-empty or busy directory is simply left (another container
    uses it).
    """
    left = []
    for directory in dirs:
        deadline = time.monotonic() + (timeout if strict else 0)
        delay = 0.001
        while True:
            try:
                if strict:
                    _remove_children(directory, rmdir)
                rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as err:
                busy = err.errno in (errno.EBUSY, errno.ENOTEMPTY)
                if not busy or time.monotonic() >= deadline:
                    left.append(directory)
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
    return left


def _remove_children(directory: str, rmdir: Callable[[str], None]) -> None:
    with os.scandir(directory) as entries:
        children = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    for child in children:
        _remove_children(child, rmdir)
        rmdir(child)
