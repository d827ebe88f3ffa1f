"""Conformance: each namespace in linux.namespaces is new (differs from the host's), or, with a
`path`, is the very namespace found there."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.conformance import Box
from tests.support.runtimes import TIMEOUT, token

# config.json type -> name under /proc/<pid>/ns
NS_FILES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt",
            "cgroup": "cgroup"}


def inside_namespaces(box: Box, namespaces: list[dict[str, str]]) -> dict[str, str]:
    bundle = box.sh("for n in pid net ipc uts mnt cgroup; do echo $n $(readlink /proc/self/ns/$n); "
                    "done")
    bundle.config["linux"]["namespaces"] = namespaces
    bundle.config.pop("hostname", None)
    out = box.run_ok(bundle)
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_every_namespace_differs_from_the_hosts(box: Box) -> None:
    inside = inside_namespaces(box, [{"type": t} for t in NS_FILES])
    for ns in NS_FILES.values():
        host = os.readlink(f"/proc/self/ns/{ns}")
        assert inside[ns].startswith(f"{ns}:["), inside
        assert inside[ns] != host, f"{ns} namespace is the host's: {host}"


def test_namespaces_not_listed_are_shared_with_the_host(box: Box) -> None:
    inside = inside_namespaces(box, [{"type": "mount"}, {"type": "pid"}])
    for ns in ("net", "ipc", "uts", "cgroup"):
        assert inside[ns] == os.readlink(f"/proc/self/ns/{ns}"), ns


@pytest.fixture
def netns() -> Iterator[Path]:
    name = f"pydesk-test-{token()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=TIMEOUT)
    try:
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True, timeout=TIMEOUT)


@pytest.fixture
def holder() -> Iterator[int]:
    """A sleeping process in its own pid, ipc, uts and cgroup namespaces; yields its pid."""
    # --kill-child: the sleeper dies with unshare, even if this fixture is interrupted.
    proc = subprocess.Popen(["unshare", "--fork", "--kill-child", "--pid", "--ipc", "--uts",
                             "--cgroup", "sleep", "300"], stdin=subprocess.DEVNULL)
    try:
        # The sleeper is unshare's child, pid 1 of the new pid namespace.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 10
        while not (pids := children.read_text().split()):
            assert time.monotonic() < deadline, "unshare did not start its child"
            time.sleep(0.02)
        yield int(pids[0])
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def test_namespaces_are_joined_by_path(box: Box, netns: Path, holder: int) -> None:
    namespaces = [{"type": "mount"},
                  {"type": "network", "path": str(netns)},
                  {"type": "pid", "path": f"/proc/{holder}/ns/pid"},
                  {"type": "ipc", "path": f"/proc/{holder}/ns/ipc"},
                  {"type": "uts", "path": f"/proc/{holder}/ns/uts"},
                  {"type": "cgroup", "path": f"/proc/{holder}/ns/cgroup"}]
    inside = inside_namespaces(box, namespaces)
    assert inside["net"] == f"net:[{os.stat(netns).st_ino}]"
    for ns in ("pid", "ipc", "uts", "cgroup"):
        assert inside[ns] == os.readlink(f"/proc/{holder}/ns/{ns}"), ns
    assert inside["mnt"] != os.readlink("/proc/self/ns/mnt")
