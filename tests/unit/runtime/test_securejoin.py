"""secure_join: container paths resolve inside the rootfs, whatever the symlinks say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pydeskd.runtime.securejoin import secure_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr" / "lib").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    return rootfs


def test_plain_path_is_joined(root: Path) -> None:
    assert secure_join(str(root), "/usr/lib/x") == str(root / "usr/lib/x")


def test_dotdot_is_clamped_at_the_root(root: Path) -> None:
    assert secure_join(str(root), "/../../../etc/passwd") == str(root / "etc/passwd")
    assert secure_join(str(root), "usr/../../etc") == str(root / "etc")


def test_absolute_symlink_to_host_etc_lands_inside(root: Path) -> None:
    (root / "hostetc").symlink_to("/etc")
    assert secure_join(str(root), "/hostetc/shadow") == str(root / "etc/shadow")


def test_relative_symlink_escaping_lands_inside(root: Path) -> None:
    (root / "usr" / "escape").symlink_to("../../../../../tmp")
    assert secure_join(str(root), "/usr/escape/x") == str(root / "tmp/x")


def test_chained_symlinks_are_followed_component_by_component(root: Path) -> None:
    (root / "a").symlink_to("usr")
    (root / "usr" / "b").symlink_to("/usr/lib")
    assert secure_join(str(root), "/a/b/c") == str(root / "usr/lib/c")


def test_final_symlink_is_resolved(root: Path) -> None:
    (root / "mnt").symlink_to("/etc")
    assert secure_join(str(root), "/mnt") == str(root / "etc")


def test_symlink_loop_is_an_error(root: Path) -> None:
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    with pytest.raises(OSError) as info:
        secure_join(str(root), "/loop1/x")
    assert info.value.errno == 40


def test_result_never_leaves_root(root: Path) -> None:
    (root / "up").symlink_to("..")
    (root / "abs").symlink_to("/")
    for unsafe in ("/up/up/up", "/abs/../..", "/up/abs/up/etc", "../up/../.."):
        resolved = secure_join(str(root), unsafe)
        assert resolved == str(root) or resolved.startswith(str(root) + os.sep), unsafe
