"""What keeps the CLI's start-up within its budget (150 ms of its own time, docs/cli.md): what
``pydesk --help``, the fast path and the Typer path import (nothing heavy), and docker-py without
its SSH transport. The time itself is a speed target, so it is measured by a benchmark, not by a
timed test: ``bench/cli_startup.py`` (CPU time of each command, and at an engine command's first
API request, against the 150 ms budget and the docker CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PYDESK = Path(sys.executable).with_name("pydesk")
HEAVY = ("docker", "rich", "requests", "paramiko", "pydantic", "urllib3", "pydesk.vm",
         "pydesk.cli.doctor_checks", "pydesk.cli.doctor_probes", "pydesk.cli.native",
         "pydesk.dockercontext", "webbrowser")

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
