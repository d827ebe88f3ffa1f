"""Conformance: create -> created -> start -> running -> kill -> stopped -> delete, leaving
nothing behind; illegal steps fail with a non-zero exit and a message."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.conformance import Box, Bundle
from tests.support.runtimes import cgroup_dirs, mounts_mentioning, pid_alive, reap_children


def marker_bundle(box: Box) -> tuple[Bundle, Path]:
    """A container that writes a marker into a host directory, then sleeps."""
    shared = box.host_dir("shared")
    bundle = box.sh("echo $$ > /shared/marker; exec sleep 300")
    bundle.add_bind(shared, "/shared")
    bundle.write()
    return bundle, shared / "marker"


def wait_for(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def create(box: Box, bundle: Bundle) -> int:
    pid_file = bundle.path.parent / f"{bundle.id}.pid"
    box.runtime.create(bundle.id, bundle.path, pid_file).check()
    return int(pid_file.read_text())


def test_full_lifecycle_leaves_nothing_behind(box: Box) -> None:
    bundle, marker = marker_bundle(box)
    pid = create(box, bundle)

    state = box.runtime.state(bundle.id)
    assert state["status"] == "created"
    assert state["id"] == bundle.id
    assert state["pid"] == pid
    assert Path(state["bundle"]) == bundle.path
    assert pid_alive(pid)
    assert cgroup_dirs(bundle.cgroups_path), "no cgroup for a created container"
    time.sleep(0.3)  # a runtime that started the process early would have written by now
    assert not marker.exists(), "the user process ran before start"

    box.runtime("start", bundle.id).check()
    assert wait_for(marker) == "1\n"  # the user process is the pid namespace's init
    assert box.runtime.state(bundle.id)["status"] == "running"

    box.runtime("kill", bundle.id, "KILL").check()
    box.runtime.wait_status(bundle.id, "stopped")

    box.runtime("delete", bundle.id).check()
    reap_children()
    assert box.runtime("state", bundle.id).returncode != 0
    assert not pid_alive(pid)
    assert not (box.runtime.root / bundle.id).exists(), "state directory left behind"
    assert not cgroup_dirs(bundle.cgroups_path), "cgroup left behind"
    assert not mounts_mentioning([str(bundle.path)]), "mount left behind"


def test_kill_with_default_signal_stops_a_process_that_handles_it(box: Box) -> None:
    # The default signal is SIGTERM; an init without a handler would ignore it.
    bundle = box.sh("trap 'exit 0' TERM; while :; do sleep 0.1; done")
    create(box, bundle)
    box.runtime("start", bundle.id).check()
    box.runtime.wait_status(bundle.id, "running")
    time.sleep(0.2)  # let the shell install its trap
    box.runtime("kill", bundle.id).check()
    box.runtime.wait_status(bundle.id, "stopped")
    box.runtime("delete", bundle.id).check()


def test_delete_of_a_created_container_never_runs_it(box: Box) -> None:
    bundle, marker = marker_bundle(box)
    pid = create(box, bundle)
    box.runtime("delete", "--force", bundle.id).check()
    reap_children()
    time.sleep(0.2)
    assert not marker.exists()
    assert not pid_alive(pid)
    assert not (box.runtime.root / bundle.id).exists()
    assert not cgroup_dirs(bundle.cgroups_path)


def test_pid_file_and_state_pid_name_the_init(box: Box) -> None:
    bundle, marker = marker_bundle(box)
    pid = create(box, bundle)
    box.runtime("start", bundle.id).check()
    wait_for(marker)
    # In the host's pid namespace, the init is `sleep 300` (the shell exec'd it).
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]
    assert box.runtime.state(bundle.id)["pid"] == pid


def test_start_twice_fails(box: Box) -> None:
    bundle, marker = marker_bundle(box)
    create(box, bundle)
    box.runtime("start", bundle.id).check()
    wait_for(marker)
    second = box.runtime("start", bundle.id)
    second.check_failed_clearly()
    assert box.runtime.state(bundle.id)["status"] == "running"


def test_delete_running_without_force_fails_and_force_works(box: Box) -> None:
    bundle, marker = marker_bundle(box)
    pid = create(box, bundle)
    box.runtime("start", bundle.id).check()
    wait_for(marker)
    refused = box.runtime("delete", bundle.id)
    refused.check_failed_clearly()
    assert box.runtime.state(bundle.id)["status"] == "running"
    assert pid_alive(pid)

    box.runtime("delete", "--force", bundle.id).check()
    reap_children()
    assert not pid_alive(pid)
    assert not (box.runtime.root / bundle.id).exists()
    assert not cgroup_dirs(bundle.cgroups_path)


def test_create_with_an_existing_id_fails(box: Box) -> None:
    bundle, _marker = marker_bundle(box)
    create(box, bundle)
    again = box.runtime.create(bundle.id, bundle.path)
    again.check_failed_clearly()
    assert box.runtime.state(bundle.id)["status"] == "created"


@pytest.mark.parametrize("command", [["start"], ["state"], ["kill"], ["kill", "KILL"],
                                     ["delete"], ["ps"]])
def test_unknown_id_fails_with_a_message(box: Box, command: list[str]) -> None:
    unknown = f"pydesk-test-unknown-{os.getpid()}"
    args = [command[0], unknown, *command[1:]]
    box.runtime(*args).check_failed_clearly()
