"""The CLI's start-up budget (150 ms of its own time, docs/cli.md): what ``pydesk --help``, the
fast path and the Typer path import, the CPU time ``pydesk --help``, a fast-path command and
Typer-path commands take, and the CPU time an engine command has used when it makes its first
API request (the best of a few runs: the machines are shared, and the best run is the CLI's
own cost)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PYDESK = Path(sys.executable).with_name("pydesk")
HEAVY = ("docker", "rich", "requests", "paramiko", "pydantic", "urllib3", "pydesk.vm",
         "pydesk.cli.doctor_checks", "pydesk.cli.doctor_probes", "pydesk.cli.native",
         "pydesk.dockercontext", "webbrowser")
BUDGET = 0.150

PROGRAM = """
import sys
sys.argv = ["pydesk", *sys.argv[1:]]
from pydesk.cli.main import main
try:
    main()
except SystemExit:
    pass
# (a None entry is a module kept from loading: pydesk.cli.context.skip_docker_ssh)
heavy = sorted(m for m, module in sys.modules.items()
               if module is not None and m.startswith({heavy!r}))
print("MODULES", heavy, file=sys.stderr)
"""


def loaded_after(*argv: str, heavy: tuple[str, ...] = HEAVY) -> str:
    code = PROGRAM.format(heavy=heavy)
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    return done.stderr.rpartition("MODULES ")[2].strip()


@pytest.mark.parametrize("argv", [["--help"], ["-H", "unix:///nonexistent.sock", "ps"],
                                  ["-H", "unix:///nonexistent.sock", "engine", "which"]])
def test_nothing_heavy_is_imported(argv: list[str]) -> None:
    assert loaded_after(*argv) == "[]"


@pytest.mark.parametrize("argv", [["doctor", "--help"], ["context", "--help"],
                                  ["engine", "start", "--help"], ["run", "--help"],
                                  ["version"], ["vm", "status", "--help"]])
def test_the_typer_path_imports_nothing_heavy(argv: list[str]) -> None:
    # pydantic included: Typer's coercion of plain parameters skips it (pydesk.cli.coercion).
    assert loaded_after(*argv) == "[]"


def test_an_engine_command_imports_docker_py_without_its_ssh_transport() -> None:
    loaded = loaded_after("-H", "unix:///nonexistent.sock", "stop", "x",
                          heavy=("docker", "paramiko", "invoke", "pydantic", "rich"))
    assert "'docker'" in loaded
    assert "paramiko" not in loaded and "invoke" not in loaded
    assert "pydantic" not in loaded and "rich" not in loaded


def test_an_ssh_engine_keeps_docker_pys_ssh_transport() -> None:
    loaded = loaded_after("-H", "ssh://pydesk-test@127.0.0.1:1", "stop", "x",
                          heavy=("docker.transport.sshconn", "paramiko."))
    assert "'docker.transport.sshconn'" in loaded


def cpu_seconds(argv: list[str]) -> float:
    """The CPU time (user + system) a command used: unlike wall time, other processes on the
    shared cores barely change it."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, argv
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("argv", [["--help"], ["engine", "which"], ["version"],
                                  ["run", "--help"], ["vm", "--help"],
                                  ["network", "create", "--help"]])
def test_start_up_within_the_budget(argv: list[str]) -> None:
    best = min(cpu_seconds([str(PYDESK), "-H", "unix:///nonexistent.sock", *argv])
               for _ in range(7))
    assert best < BUDGET, f"pydesk {' '.join(argv)} used {best * 1000:.0f} ms of CPU at best"


# Runs pydesk and stops it at its first socket connect (the first API request, docker-py's
# included): the CPU time the process has used by then is the CLI's own start-up.
FIRST_REQUEST = """
import os, socket, sys, time

def first_request(self, address):
    os.write(2, f"CPU-AT-FIRST-REQUEST {time.process_time()!r}\\n".encode())
    os._exit(0)

socket.socket.connect = first_request
sys.argv = ["pydesk", *sys.argv[1:]]
from pydesk.cli.main import main
main()
"""


def cpu_at_first_request(argv: list[str]) -> float:
    done = subprocess.run([sys.executable, "-c", FIRST_REQUEST, *argv], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert "CPU-AT-FIRST-REQUEST" in done.stderr, done.stderr
    return float(done.stderr.rpartition("CPU-AT-FIRST-REQUEST ")[2].split()[0])


@pytest.mark.parametrize("argv", [["stop", "x"], ["run", "-d", "-p", "8080:80", "busybox"],
                                  ["volume", "ls"], ["logs", "x"]])
def test_engine_commands_reach_their_first_request_within_the_budget(argv: list[str]) -> None:
    best = min(cpu_at_first_request(["-H", "unix:///nonexistent.sock", *argv])
               for _ in range(7))
    assert best < BUDGET, f"pydesk {' '.join(argv)}: {best * 1000:.0f} ms of CPU at best " \
                          "before its first API request"
