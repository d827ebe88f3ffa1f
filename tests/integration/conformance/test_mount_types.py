"""Conformance: the mount types of `runc spec`'s config (proc, devpts, mqueue, sysfs, cgroup),
the /dev links every runtime adds, --no-pivot, and the state a runtime reports."""

from __future__ import annotations

import pytest

from tests.support.conformance import Box


def mounts_by_target(proc_mounts: str) -> dict[str, tuple[str, set[str]]]:
    table: dict[str, tuple[str, set[str]]] = {}
    for line in proc_mounts.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            table[fields[1]] = (fields[2], set(fields[3].split(",")))
    return table


def test_standard_mounts(box: Box) -> None:
    bundle = box.bundle(["cat", "/proc/self/mounts"])
    table = mounts_by_target(box.run_ok(bundle))
    assert table["/proc"][0] == "proc"
    assert table["/dev"][0] == "tmpfs"
    assert {"nosuid", "mode=755"} <= table["/dev"][1]
    assert table["/dev/pts"][0] == "devpts"
    assert {"nosuid", "noexec", "gid=5", "mode=620", "ptmxmode=666"} <= table["/dev/pts"][1]
    assert table["/dev/shm"][0] == "tmpfs"
    assert {"nosuid", "nodev", "noexec"} <= table["/dev/shm"][1]
    assert table["/dev/mqueue"][0] == "mqueue"
    assert table["/sys"][0] == "sysfs"
    assert "ro" in table["/sys"][1]
    # cgroup v1: a tmpfs holding one ro mount per hierarchy; v2: one ro cgroup2 mount.
    assert "/sys/fs/cgroup" in table
    cgroup_mounts = {t: v for t, v in table.items() if t.startswith("/sys/fs/cgroup")}
    assert any(kind in ("cgroup", "cgroup2") for kind, _ in cgroup_mounts.values())
    for target, (kind, options) in cgroup_mounts.items():
        if kind in ("cgroup", "cgroup2"):
            assert "ro" in options, (target, options)


def test_dev_links_and_ptmx(box: Box) -> None:
    # >> not >: when stdout is the caller's file (not runc run's pipe), > would truncate it.
    bundle = box.sh("for l in fd stdin stdout stderr ptmx; do echo $l $(readlink /dev/$l); done;"
                    " echo hello >> /dev/stdout")
    assert box.run_ok(bundle).splitlines() == [
        "fd /proc/self/fd", "stdin /proc/self/fd/0", "stdout /proc/self/fd/1",
        "stderr /proc/self/fd/2", "ptmx pts/ptmx", "hello"]


def test_no_pivot(box: Box) -> None:
    bundle = box.sh("cat /etc/passwd | head -1; ls /; touch /ok && echo writable")
    bundle.write()
    box.runtime.ids.add(bundle.id)
    result = box.runtime("run", "--no-pivot", "--bundle", str(bundle.path), bundle.id).check()
    lines = result.stdout.splitlines()
    assert lines[0] == "root:x:0:0:root:/root:/bin/sh"
    assert "bin" in lines and "proc" in lines
    assert lines[-1] == "writable"
    assert (bundle.rootfs / "ok").exists()


def test_state_reports_the_spec_fields(box: Box) -> None:
    bundle = box.bundle(["sleep", "300"])
    bundle.config["annotations"] = {"org.pydesk.test": "yes", "other": "1"}
    bundle.write()
    box.runtime.create(bundle.id, bundle.path).check()
    state = box.runtime.state(bundle.id)
    assert state["ociVersion"]
    assert state["id"] == bundle.id
    assert state["status"] == "created"
    assert state["bundle"] == str(bundle.path)
    assert isinstance(state["pid"], int) and state["pid"] > 0
    assert state["annotations"] == {"org.pydesk.test": "yes", "other": "1"}


@pytest.mark.parametrize("signal", ["KILL", "SIGKILL", "9"])
def test_kill_accepts_signal_names_and_numbers(box: Box, signal: str) -> None:
    bundle = box.bundle(["sleep", "300"])
    bundle.write()
    box.runtime.create(bundle.id, bundle.path).check()
    box.runtime("start", bundle.id).check()
    box.runtime("kill", bundle.id, signal).check()
    box.runtime.wait_status(bundle.id, "stopped")


def test_kill_rejects_an_unknown_signal(box: Box) -> None:
    bundle = box.bundle(["sleep", "300"])
    bundle.write()
    box.runtime.create(bundle.id, bundle.path).check()
    box.runtime("kill", bundle.id, "SIGNOPE").check_failed_clearly()
    assert box.runtime.state(bundle.id)["status"] == "created"
