"""Fixtures for the ``pydesk`` CLI against a real pydeskd (passthrough mode, by ``-H``): one
local registry mirror serving busybox per session, one daemon per module; after each test its
containers, and the volumes and networks the test named ``pdcli-*``, are removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image_fixtures import busybox_mirror  # noqa: F401 -- a fixture
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry

PYDESK = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "pydesk"


@pytest.fixture(scope="module")
def daemon(busybox_mirror: Registry) -> Iterator[Pydeskd]:
    base = Path(tempfile.mkdtemp(prefix="pd-cli-", dir="/tmp"))
    with Pydeskd(base, config={"registry-mirrors": [busybox_mirror.url]}) as d:
        yield d
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def d(daemon: Pydeskd) -> Iterator[Pydeskd]:
    yield daemon
    daemon.remove_containers()
    if daemon.proc is None or daemon.proc.poll() is not None:
        return
    for kind in ("volume", "network"):
        names = daemon.docker(kind, "ls", "-q", "--filter", "name=pdcli-",
                              check=False).stdout.split()
        if names:
            daemon.docker(kind, "rm", *(n.decode() for n in names), check=False)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYDESK_", "DOCKER_"))}


def pydesk(d: Pydeskd, *args: str, check: bool = True, timeout: float = 60,
           input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """``pydesk -H <daemon> ARGS``; on a failure that was not expected, the output and log."""
    result = subprocess.run([str(PYDESK), "-H", d.host, *args], capture_output=True,
                            input=input, timeout=timeout, env=env(), check=False)
    done = subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise AssertionError(f"pydesk {' '.join(args)} -> {result.returncode}\n{done.stdout}\n"
                             f"{done.stderr}\n--- pydeskd log:\n{d.log_tail()}")
    return done
