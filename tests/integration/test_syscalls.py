"""The syscall seam, for real (root): each call does what it says, in a forked child whose
namespaces die with it, so nothing reaches the host."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from pydeskd.runtime import syscalls as sc


def in_child(body: Callable[[], object]) -> object:
    """Runs body() in a forked child; returns its JSON result or raises its error text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_end)
        try:
            payload = {"ok": body()}
        except BaseException as exc:
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(payload).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result = json.loads(data)
    if "error" in result:
        raise AssertionError(result["error"])
    return result["ok"]


def test_unshare_uts_and_sethostname_stay_inside() -> None:
    host = socket.gethostname()

    def body() -> str:
        s = sc.LinuxSyscalls()
        s.unshare(sc.CLONE_NEWUTS)
        s.sethostname("pydesk-seam")
        s.setdomainname("seam.test")
        return socket.gethostname()

    assert in_child(body) == "pydesk-seam"
    assert socket.gethostname() == host


def test_mount_and_pivot_root_in_a_private_mount_namespace(tmp_path: Path) -> None:
    new_root = tmp_path / "root"
    new_root.mkdir()

    def body() -> list[str]:
        s = sc.LinuxSyscalls()
        s.unshare(sc.CLONE_NEWNS)
        s.mount("", "/", "", sc.MS_REC | sc.MS_PRIVATE, "")
        s.mount("tmpfs", str(new_root), "tmpfs", sc.MS_NOSUID, "size=1m,mode=755")
        Path(new_root, "marker").write_text("inside")
        os.chdir(new_root)
        s.pivot_root(".", ".")
        s.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
        return sorted(os.listdir("/"))

    assert in_child(body) == ["marker"]
    assert list(new_root.iterdir()) == []  # the tmpfs never reached the host's mount namespace
    assert str(new_root) not in Path("/proc/self/mounts").read_text()


def test_errors_carry_errno_and_call() -> None:
    s = sc.LinuxSyscalls()
    with pytest.raises(OSError) as info:
        s.umount2("/nonexistent-pydesk-path", 0)
    assert info.value.errno is not None
    assert "umount2('/nonexistent-pydesk-path'" in str(info.value)


def test_setns_joins_a_namespace_by_fd() -> None:
    def body() -> bool:
        s = sc.LinuxSyscalls()
        before = os.readlink("/proc/self/ns/uts")
        fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
        s.unshare(sc.CLONE_NEWUTS)
        moved = os.readlink("/proc/self/ns/uts") != before
        s.setns(fd, sc.CLONE_NEWUTS)
        return moved and os.readlink("/proc/self/ns/uts") == before

    assert in_child(body) is True


def test_prctl_no_new_privs_and_capset_round_trip() -> None:
    def body() -> list[int]:
        s = sc.LinuxSyscalls()
        s.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        kill = 1 << 5
        s.capset(sc.CapSets(effective=kill, permitted=kill, inheritable=0))
        caps = s.capget()
        return [s.prctl(sc.PR_GET_NO_NEW_PRIVS), caps.effective, caps.permitted]

    assert in_child(body) == [1, 1 << 5, 1 << 5]
