"""The guest's serial console, read by the host agent for what the guest init says of itself.

What it is for: the guest init prints ``vmcontract.GUEST_SERIAL_FAILED`` and a reason when it
gives up on pydeskd; the agent reads the console log as it grows (never the whole file again)
and reports that at once, instead of waiting for its boot timeout. It must never write to the
console log (QEMU owns it) or block on it.
"""

from __future__ import annotations

from pathlib import Path

from pydeskd import vmcontract

_MAX_READ = 1 << 20


class ConsoleWatch:
    """New complete lines of a growing log file, from where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read(_MAX_READ)
        except OSError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [line.decode(errors="replace").rstrip("\r") for line in lines]

    def guest_failure(self) -> str | None:
        """The reason of the first failure line among the new ones, if any."""
        for line in self.new_lines():
            at = line.find(vmcontract.GUEST_SERIAL_FAILED)
            if at >= 0:
                return line[at + len(vmcontract.GUEST_SERIAL_FAILED):].strip() or "no reason"
        return None
