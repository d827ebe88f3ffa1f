"""QMP control of a running QEMU through qemu.qmp, behind a small synchronous facade.

What it is for: the agent and the CLI ask QEMU for its status and tell it to power down or quit;
the agent also stops, saves (``migrate`` to a file), loads (``migrate-incoming``) and continues
the VM for ``pydesk.vm.resume``.
Each call connects, runs one command and disconnects (QEMU's QMP chardev serves one client at a
time, so holding it would lock out the CLI).
What it must never do: connect anywhere but the instance's unix socket, or block without a
timeout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydesk.vm.errors import VmError

DEFAULT_TIMEOUT = 5.0


class QmpError(VmError):
    """QEMU could not be reached over QMP, or refused a command."""


class Qmp:
    """``Qmp(path).query_status()`` etc.; every method raises QmpError on failure."""

    def __init__(self, socket_path: Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        try:
            return asyncio.run(asyncio.wait_for(self._execute(command, arguments), self.timeout))
        except QmpError:
            raise
        except TimeoutError as e:
            raise QmpError(f"QMP {command}: no answer from QEMU in {self.timeout:g}s") from e
        except Exception as e:  # qemu.qmp raises its own hierarchy and OSError subclasses
            raise QmpError(f"QMP {command} on {self.socket_path}: {e}") from e

    async def _execute(self, command: str, arguments: dict[str, Any] | None) -> Any:
        from qemu.qmp import QMPClient

        client = QMPClient("pydesk")
        await client.connect(str(self.socket_path))
        try:
            return await client.execute(command, arguments)
        finally:
            await client.disconnect()

    def query_status(self) -> str:
        """QEMU's run state: 'running', 'paused', 'shutdown', 'guest-panicked'..."""
        return str(self.execute("query-status")["status"])

    def system_powerdown(self) -> None:
        """ACPI power button: the guest's init syncs, unmounts and powers off."""
        self.execute("system_powerdown")

    def quit(self) -> None:
        """QEMU exits at once (block devices are flushed and closed); the guest gets no warning."""
        try:
            self.execute("quit")
        except QmpError as e:
            # QEMU may close the socket before answering 'quit': it did what was asked.
            if "quit" not in str(e) or self.socket_path.exists():
                raise

    def balloon_actual_mib(self) -> int:
        """The guest's memory as the balloon sees it, in MiB."""
        return int(self.execute("query-balloon")["actual"]) // (1024 * 1024)

    def stop(self) -> None:
        """Pauses the vCPUs (the devices keep their state)."""
        self.execute("stop")

    def cont(self) -> None:
        """Runs the vCPUs again (also after a completed migration: QEMU takes the disks back)."""
        self.execute("cont")

    def migrate(self, uri: str) -> None:
        """Starts sending the VM's state to ``uri`` (``exec:...``); poll :meth:`query_migrate`."""
        self.execute("migrate", {"uri": uri})

    def migrate_incoming(self, uri: str) -> None:
        """Starts loading the VM's state from ``uri`` (QEMU started with ``-incoming defer``)."""
        self.execute("migrate-incoming", {"uri": uri})

    def query_migrate(self) -> dict[str, Any]:
        """``{"status": "active" | "completed" | "failed" ..., "error-desc": ...}``."""
        answer = self.execute("query-migrate")
        return dict(answer) if isinstance(answer, dict) else {}

    def human(self, command_line: str) -> str:
        """An HMP command's text output (``info usernet``): for diagnostics only."""
        return str(self.execute("human-monitor-command", {"command-line": command_line}))
