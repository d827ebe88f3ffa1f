"""The agent's handle on QEMU: a child it spawned, or a running QEMU it adopted.

What it is for: QEMU outlives its agent (its own session, no parent-death signal), so an agent
killed with -9 leaves the VM running, and the next ``pydesk vm start`` starts an agent that
adopts it: :func:`adoptable` decides from a process's command line whether it is this
instance's QEMU (the same binary, the instance's QMP socket and pid file), and
:class:`Adopted` watches it through psutil as :class:`Spawned` watches a child through Popen.
An agent killed between QMP ``stop`` and ``cont`` (while saving the VM state) leaves the VM
paused: :func:`continue_if_paused` runs it again on adoption.
What it must never do: adopt or signal a process that was not proven to be this instance's QEMU.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pydesk.vm.instance import InstanceFiles
from pydeskd import vmcontract


class QemuProcess(Protocol):
    pid: int

    def poll(self) -> int | None:
        """The exit code once QEMU exited (0 when unknown: an adopted QEMU), else None."""

    def wait(self, timeout: float | None = None) -> int:
        """Raises TimeoutError."""

    def kill(self) -> None: ...


class PauseControl(Protocol):
    """The QMP calls :func:`continue_if_paused` needs (``pydesk.vm.qmp.Qmp`` has them)."""

    def query_status(self) -> str: ...

    def query_migrate(self) -> dict[str, Any]: ...

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any: ...

    def cont(self) -> None: ...


# QEMU run states of a VM stopped by us (``stop``, an outgoing migration of a stopped VM, its
# end) or still loading a state (an agent killed during resume.load): the VM must run on.
_PAUSED = frozenset({"paused", "postmigrate", "finish-migrate", "inmigrate"})
_MIGRATING = frozenset({"setup", "active", "pre-switchover", "device", "cancelling"})
PAUSE_WAIT = 30.0


def continue_if_paused(qmp: PauseControl, *, timeout: float = PAUSE_WAIT,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> str:
    """Runs an adopted VM that its dead agent left paused; returns what it did ("" when the VM
    ran). An outgoing migration (the state save) still under way is cancelled first: its file
    was never renamed into place, so nothing loads it. An incoming one (a load) is waited for.
    Raises pydesk.vm.qmp.QmpError, or VmError when the VM is still not running after
    ``timeout`` seconds or in a state ``cont`` cannot fix (shutdown, guest-panicked...)."""
    from pydesk.vm.errors import VmError

    status = qmp.query_status()
    if status == "running":
        return ""
    first = status
    deadline = clock() + timeout
    while status in _PAUSED:
        migration = str(qmp.query_migrate().get("status") or "")
        if migration in _MIGRATING and status != "inmigrate":
            if migration != "cancelling":
                qmp.execute("migrate_cancel")
        elif status in ("paused", "postmigrate"):
            qmp.cont()
        if clock() > deadline:
            break
        sleep(0.05)
        status = qmp.query_status()
        if status == "running":
            return f"the VM was left {first} by the previous agent: continued it"
    raise VmError(f"the adopted VM is {status} (was {first}) and could not be run again")


class Spawned:
    """QEMU started by this agent, in a session of its own: it survives the agent."""

    def __init__(self, argv: list[str], log: Any) -> None:
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      start_new_session=True)
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise TimeoutError(f"QEMU (pid {self.pid}) still runs") from e

    def kill(self) -> None:
        self.popen.kill()


class Adopted:
    """A QEMU started by an earlier agent: not our child, so its exit code is unknown (0)."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self.pid = int(proc.pid)

    def poll(self) -> int | None:
        import psutil  # type: ignore[import-untyped]

        try:
            return None if self.proc.status() != psutil.STATUS_ZOMBIE else 0
        except psutil.NoSuchProcess:
            return 0

    def wait(self, timeout: float | None = None) -> int:
        import psutil

        try:
            self.proc.wait(timeout)
        except psutil.TimeoutExpired as e:
            raise TimeoutError(f"QEMU (pid {self.pid}) still runs") from e
        return 0

    def kill(self) -> None:
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            self.proc.kill()


def adoptable(cmdline: list[str], files: InstanceFiles, qemu_binary: str) -> bool:
    """Whether ``cmdline`` is this instance's QEMU: the same binary (by name: a path may be a
    symlink), and both the instance's QMP socket and pid file in its arguments."""
    if not cmdline or Path(cmdline[0]).name != Path(qemu_binary).name:
        return False
    joined = " ".join(cmdline)
    return (f"path={files.qmp_socket}," in joined and str(files.qemu_pid) in cmdline)


def ssh_port_of(cmdline: list[str]) -> int:
    """The host port of the sshd forward in QEMU's ``-netdev user,...,hostfwd=`` (0: none)."""
    prefix = f"hostfwd=tcp:{vmcontract.HOST_FORWARD_ADDRESS}:"
    suffix = f"-:{vmcontract.GUEST_SSH_PORT}"
    for arg in cmdline:
        for part in arg.split(","):
            if part.startswith(prefix) and part.endswith(suffix):
                port = part[len(prefix):-len(suffix)]
                return int(port) if port.isdigit() else 0
    return 0


def find_adoptable(files: InstanceFiles, qemu_binary: str) -> Adopted | None:
    """This instance's live QEMU named by its pid file, if it passes :func:`adoptable`."""
    import psutil

    try:
        pid = int(files.qemu_pid.read_text().strip())
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or pid == os.getpid():
            return None
        return Adopted(proc) if adoptable(proc.cmdline(), files, qemu_binary) else None
    except (OSError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return None
