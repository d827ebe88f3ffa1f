"""Finding and starting the per-VM agent and its QEMU, by pid file plus command line (psutil).

What it is for: a pid file alone can name a recycled pid; :func:`find_process` accepts the pid
only if the process's command line still carries a marker as one whole argument (the instance
directory for the agent, the pid file path for QEMU): a substring would let instance ``dev``
take instance ``dev2``'s process (``~/.pydesk/dev`` is a prefix of ``~/.pydesk/dev2``).
:func:`spawn_agent` starts ``python -m pydesk.agent`` detached (own session or process group),
so it outlives the CLI.
What it must never do: signal a process that was not proven to be ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydesk.vm.instance import HOME_ENV, InstanceFiles

AGENT_MODULE = "pydesk.agent"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def find_process(pidfile: Path, marker: str) -> Any | None:
    """The live ``psutil.Process`` named by ``pidfile`` that has ``marker`` as one of its
    command-line arguments (:func:`has_argument`)."""
    import psutil  # type: ignore[import-untyped]

    pid = read_pid(pidfile)
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if not has_argument(proc.cmdline(), marker):
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def has_argument(cmdline: list[str], marker: str) -> bool:
    """Whether ``marker`` is one whole argument of ``cmdline`` (never a part of one)."""
    return marker in cmdline


def agent_marker(files: InstanceFiles) -> str:
    return str(files.dir)


def find_agent(files: InstanceFiles) -> Any | None:
    return find_process(files.agent_pid, agent_marker(files))


def find_qemu(files: InstanceFiles) -> Any | None:
    return find_process(files.qemu_pid, str(files.qemu_pid))


def agent_argv(files: InstanceFiles) -> list[str]:
    return [sys.executable, "-m", AGENT_MODULE, "--instance-dir", str(files.dir)]


def spawn_agent(files: InstanceFiles) -> int:
    """Starts the agent detached from this process; returns its pid. Output goes to agent.log."""
    env = dict(os.environ)
    env[HOME_ENV] = str(files.dir.parent)
    kwargs: dict[str, Any] = {}
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS  # type: ignore[attr-defined,unused-ignore]
        kwargs["creationflags"] = flags
    else:
        kwargs["start_new_session"] = True
    with files.agent_log.open("ab") as log:
        proc = subprocess.Popen(agent_argv(files), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, env=env, close_fds=True, **kwargs)
    return proc.pid
