"""The one place where the host side of the VM runs short external programs (qemu-img, sysctl).

What it is for: every command goes through :func:`run`, which raises :class:`ToolFailed` with the
exact command line and its stderr, so a failure is readable and a test can swap the seam.
What it must never do: run a long-lived process (QEMU itself is spawned by the agent) or use a
shell.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence

from pydesk.vm.errors import NotFound, ToolFailed

Runner = Callable[[Sequence[str]], str]
"""The seam: runs argv, returns its stdout as text, raises ToolFailed on failure."""


def run(argv: Sequence[str], *, timeout: float = 60) -> str:
    """Runs ``argv`` and returns its stdout; raises ToolFailed (exit, timeout) or NotFound."""
    try:
        result = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise NotFound(f"program not found: {argv[0]}",
                       hint="install QEMU (qemu-system and qemu-utils)") from e
    except subprocess.TimeoutExpired as e:
        raise ToolFailed(f"timed out after {timeout:g}s: {shlex.join(argv)}") from e
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise ToolFailed(f"exit {result.returncode}: {shlex.join(argv)}: {stderr}")
    return result.stdout.decode(errors="replace")
