"""The one seam for network namespaces that outlive their creator: bind-mounted files.

What it is for: ``create(path)`` makes a new network namespace and pins it by bind-mounting it
on ``path`` (``<exec-root>/netns/<container id>``), as ``ip netns add`` does, so it survives
pydeskd (kill -9 included) and the container joins it by path; ``delete(path)`` unpins it (the
namespace, with its veth ends, goes when the last process in it does). The namespace is made
on a short-lived thread of its own: unshare(CLONE_NEWNET) changes only the calling thread, and
that thread ends right after the bind mount, so pydeskd's own threads never change namespace.

What it must never do: enter a namespace on a thread that lives on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from typing import Protocol

from pydeskd.runtime.syscalls import CLONE_NEWNET, MS_BIND, LinuxSyscalls

MNT_DETACH = 2


class Namespaces(Protocol):
    def create(self, path: Path) -> None: ...

    def delete(self, path: Path) -> None: ...

    def exists(self, path: Path) -> bool: ...


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == target for line in info)


class BindMountedNamespaces:
    """``Namespaces`` over the kernel (needs CAP_SYS_ADMIN)."""

    def __init__(self) -> None:
        self.sys = LinuxSyscalls()

    def create(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(exist_ok=True)
        failure: list[BaseException] = []

        def body() -> None:
            try:
                self.sys.unshare(CLONE_NEWNET)
                self.sys.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net",
                               str(path), "", MS_BIND, "")
            except BaseException as exc:  # re-raised on the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=body, name="netns-create", daemon=True)
        thread.start()
        thread.join()
        if failure:
            with contextlib.suppress(OSError):
                path.unlink()
            raise failure[0]

    def delete(self, path: Path) -> None:
        while True:  # stacked mounts (a crash between two creates) all go
            try:
                self.sys.umount2(str(path), MNT_DETACH)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):
                    break
                raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def exists(self, path: Path) -> bool:
        return path.exists() and _mounted(path)
