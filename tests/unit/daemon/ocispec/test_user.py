"""--user resolution inside the rootfs, never outside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.ocispec import ExecUser, resolve_user

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1::/usr/sbin:/bin/false
app:x:1000:1000:App:/home/app:/bin/sh
"""
GROUP = """root:x:0:
wheel:x:10:root,app
app:x:1000:
audio:x:29:app
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize(("spec", "expected"), [
    ("", ExecUser(0, 0, (0, 10), "/root")),
    ("root", ExecUser(0, 0, (0, 10), "/root")),
    ("app", ExecUser(1000, 1000, (1000, 10, 29), "/home/app")),
    ("1000", ExecUser(1000, 1000, (1000, 10, 29), "/home/app")),
    ("app:audio", ExecUser(1000, 29, (29,), "/home/app")),
    ("app:0", ExecUser(1000, 0, (0,), "/home/app")),
    ("4242", ExecUser(4242, 0, (0,), "/")),
    ("4242:4343", ExecUser(4242, 4343, (4343,), "/")),
    ("daemon:", ExecUser(1, 1, (1,), "/usr/sbin")),
])
def test_resolve(rootfs: Path, spec: str, expected: ExecUser) -> None:
    assert resolve_user(str(rootfs), spec) == expected


def test_group_add(rootfs: Path) -> None:
    assert resolve_user(str(rootfs), "daemon", ["audio", "77"]).additional_gids == (1, 29, 77)
    assert resolve_user(str(rootfs), "daemon", ["audio", "29", "77", "77"]).additional_gids == (
        1, 29, 77)
    with pytest.raises(InvalidArgument, match="Unable to find group nope"):
        resolve_user(str(rootfs), "", ["nope"])


@pytest.mark.parametrize(("spec", "message"), [
    ("nobody", "unable to find user nobody: no matching entries in passwd file"),
    ("app:nogroup", "unable to find group nogroup: no matching entries in group file"),
    ("3000000000", "uids and gids must be in range 0-2147483647"),
])
def test_errors(rootfs: Path, spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        resolve_user(str(rootfs), spec)
    assert str(e.value) == message


def test_no_passwd_numbers_only(tmp_path: Path) -> None:
    assert resolve_user(str(tmp_path), "") == ExecUser(0, 0, (0,), "/")
    assert resolve_user(str(tmp_path), "5:6") == ExecUser(5, 6, (6,), "/")
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user(str(tmp_path), "app")


@pytest.mark.parametrize("absolute", [True, False])
def test_symlinked_passwd_pointing_outside_reads_nothing_of_the_host(
        tmp_path: Path, absolute: bool) -> None:
    host_file = tmp_path / "etc" / "passwd"
    host_file.parent.mkdir()
    host_file.write_text("secret:x:4242:4242::/:/bin/sh\n")
    rootfs = tmp_path / "images" / "a" / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    # Both links name the host file when followed from the host: the absolute one directly,
    # the relative one by climbing out of the rootfs with "..".
    target = str(host_file) if absolute else "../../../../etc/passwd"
    os.symlink(target, rootfs / "etc/passwd")
    assert (rootfs / "etc/passwd").read_text().startswith("secret")  # the trap is armed
    with pytest.raises(InvalidArgument, match="unable to find user secret"):
        resolve_user(str(rootfs), "secret")
    # Inside the rootfs the link resolves as the container would see it.
    inner = rootfs / str(host_file).lstrip("/") if absolute else rootfs / "etc/passwd.real"
    if not absolute:
        os.remove(rootfs / "etc/passwd")
        os.symlink("../../../../etc/passwd.real", rootfs / "etc/passwd")
    inner.parent.mkdir(parents=True, exist_ok=True)
    inner.write_text("inner:x:7:7::/:/bin/sh\n")
    assert resolve_user(str(rootfs), "inner").uid == 7


def test_a_fifo_at_etc_passwd_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/passwd")
    assert resolve_user(str(tmp_path), "7:7") == ExecUser(7, 7, (7,), "/")


def test_a_symlinked_etc_directory_resolves_inside_the_rootfs(tmp_path: Path) -> None:
    # A container may turn /etc into a link to a host path at any time (it owns its rootfs):
    # the kernel resolves the whole path inside the rootfs, so the host's file is never read.
    host_etc = tmp_path / "host-etc"
    host_etc.mkdir()
    (host_etc / "passwd").write_text("secret:x:4242:4242::/:/bin/sh\n")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink(str(host_etc), rootfs / "etc")
    with pytest.raises(InvalidArgument, match="unable to find user secret"):
        resolve_user(str(rootfs), "secret")
    inner = rootfs / str(host_etc).lstrip("/")
    inner.mkdir(parents=True)
    (inner / "passwd").write_text("inner:x:9:9::/:/bin/sh\n")
    assert resolve_user(str(rootfs), "inner").uid == 9
