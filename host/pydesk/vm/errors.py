"""Errors of the host side of the VM, each with a one-line message and a hint for the user.

What it is for: the CLI prints ``message`` and ``hint`` (no traceback unless --debug); the library
raises these instead of bare OSError/CalledProcessError so the user learns what to do next.
What it must never do: import anything beyond the standard library (the CLI imports it first).
"""

from __future__ import annotations


class VmError(Exception):
    """A failure the user can act on: ``message`` says what went wrong, ``hint`` what to try."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidArgument(VmError):
    """A value given by the user (name, size, accelerator) is not acceptable."""


class NotFound(VmError):
    """An instance, a file or a program that should exist does not."""


class Conflict(VmError):
    """The instance is in a state that forbids the request (e.g. rm of a running VM)."""


class ToolFailed(VmError):
    """An external program (qemu-img, QEMU) failed; the message has its command line."""


class ChannelError(VmError):
    """The SSH channel to the guest could not be opened or was refused."""


class HostKeyMismatch(ChannelError):
    """The guest presented a host key other than the pinned one: never trusted, never added."""
