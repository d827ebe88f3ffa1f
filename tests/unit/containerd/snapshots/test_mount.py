"""Performing mount lists through the recording seam: flags, data, read-only binds, rollback."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.snapshots import Mount
from pydeskd.containerd.snapshots.mount import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    RecordingMounter,
    mounted,
    parse_options,
    perform,
    unmount,
)


def test_parse_options_splits_flags_from_data() -> None:
    parsed = parse_options(["ro", "nosuid", "nodev", "lowerdir=/a:/b", "rprivate", "rw"])
    assert parsed.flags == MS_NOSUID | MS_NODEV  # "rw" after "ro" clears it
    assert parsed.propagation == MS_PRIVATE | MS_REC
    assert parsed.data == ("lowerdir=/a:/b",)


def test_read_only_bind_is_a_bind_then_a_remount() -> None:
    rec = RecordingMounter()
    perform([Mount("bind", "/s/1/fs", options=("ro", "rbind"))], "/t", rec)
    assert rec.calls == [
        ("mount", "/s/1/fs", "/t", "", MS_BIND | MS_REC, ""),
        ("mount", "", "/t", "", MS_REMOUNT | MS_BIND | MS_RDONLY, ""),
    ]


def test_type_bind_implies_a_bind() -> None:
    rec = RecordingMounter()
    perform([Mount("bind", "/src", options=("nosuid",))], "/t", rec)
    assert rec.calls == [("mount", "/src", "/t", "", MS_BIND | MS_NOSUID, "")]


def test_overlay_is_one_mount_with_its_data() -> None:
    rec = RecordingMounter()
    opts = ("workdir=/w", "upperdir=/u", "lowerdir=/l2:/l1")
    perform([Mount("overlay", "overlay", options=opts)], "/t", rec)
    assert rec.calls == [("mount", "overlay", "/t", "overlay", 0, ",".join(opts))]


def test_overlay_over_the_page_limit_goes_through_lowerdir_plus() -> None:
    rec = RecordingMounter()
    lowers = [f"/var/lib/pydesk/snapshots/snapshots/{i}/fs" for i in range(200)]
    perform([Mount("overlay", "overlay", options=("upperdir=/u", "workdir=/w",
                                          "lowerdir=" + ":".join(lowers)))], "/t", rec)
    ((call, fstype, source, target, params, flags),) = rec.calls
    assert (call, fstype, source, target, flags) == ("mount_fs", "overlay", "overlay", "/t", 0)
    assert params[:2] == (("upperdir", "/u"), ("workdir", "/w"))
    assert params[2:] == tuple(("lowerdir+", lower) for lower in lowers)


class Refusing(RecordingMounter):
    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.fail_on = fail_on

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        if len(self.calls) == self.fail_on:
            raise OSError(errno.EPERM, "refused")
        super().mount(source, target, fstype, flags, data)

    def mount_fs(self, fstype: str, source: str, target: str,
                 params: Sequence[tuple[str, str]], flags: int) -> None:
        raise OSError(errno.EINVAL, "fsconfig: unknown parameter lowerdir+")


def test_a_failure_undoes_what_was_mounted() -> None:
    rec = Refusing(fail_on=1)
    with pytest.raises(OSError, match="refused"):
        perform([Mount("tmpfs", "tmpfs"), Mount("tmpfs", "tmpfs", target="sub")], "/t", rec)
    assert rec.calls[-1] == ("umount", "/t", MNT_DETACH)
    assert rec.mounted == []


def test_long_overlay_without_the_new_api_is_a_clear_error() -> None:
    lowers = ":".join(f"/very/long/path/{i:04}/fs" for i in range(300))
    with pytest.raises(InvalidArgument, match="page limit"):
        perform([Mount("overlay", "overlay", options=("lowerdir=" + lowers,))], "/t", Refusing(-1))


def test_unmount_unstacks_until_nothing_is_mounted() -> None:
    rec = RecordingMounter()
    perform([Mount("tmpfs", "tmpfs"), Mount("tmpfs", "tmpfs")], "/t", rec)
    unmount("/t", rec)
    assert rec.mounted == []
    assert [c[0] for c in rec.calls] == ["mount", "mount", "umount", "umount", "umount"]


def test_mounted_context_mounts_and_cleans_up(tmp_path: Path) -> None:
    rec = RecordingMounter()
    with mounted([Mount("bind", "/src", options=("rbind",))], None, rec) as where:
        assert where.is_dir()
        assert rec.mounted == [str(where)]
    assert rec.mounted == []
    assert not where.exists()


def test_a_failed_read_only_remount_undoes_its_bind() -> None:
    """The bind is there, read-write, when the remount fails: it must not stay mounted."""
    rec = Refusing(fail_on=1)
    with pytest.raises(OSError, match="refused"):
        perform([Mount("bind", "/s/1/fs", options=("ro", "rbind"))], "/t", rec)
    assert rec.calls[-1] == ("umount", "/t", MNT_DETACH)
    assert rec.mounted == []


def test_a_failed_propagation_change_undoes_its_mount() -> None:
    rec = Refusing(fail_on=1)
    with pytest.raises(OSError, match="refused"):
        perform([Mount("tmpfs", "tmpfs", options=("rprivate",))], "/t", rec)
    assert rec.mounted == []
