"""Filling a volume from an image's directory: what is copied, and that a hostile rootfs (a
symlinked mount point, symlinks inside the tree) cannot make the copy read or write outside
the rootfs and the volume. The rootfs here is a plain directory (no mount, no root needed)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.volumes import VolumeService
from pydeskd.daemon.volumes import fill as fill_mod
from pydeskd.daemon.volumes.fill import fill, is_empty
from tests.unit.daemon.volumes.test_service import Mount


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "file").write_text("content\n")
    os.chmod(data / "file", 0o640)
    (data / "sub" / "deep").write_text("deep\n")
    os.chmod(data / "sub", 0o710)
    os.symlink("file", data / "rel-link")
    os.symlink("/etc/passwd", data / "abs-link")       # copied as a link, never read
    os.link(data / "file", data / "hard")
    os.mkfifo(data / "fifo")
    os.chmod(data / "fifo", 0o620)
    os.utime(data / "file", ns=(1_000_000_000, 1_000_000_000))
    os.chmod(data, 0o705)
    return root


def test_copies_everything_with_metadata(rootfs: Path, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    assert fill(rootfs, "/data", vol) is True
    assert sorted(p.name for p in vol.iterdir()) == ["abs-link", "fifo", "file", "hard",
                                                     "rel-link", "sub"]
    assert (vol / "file").read_text() == "content\n"
    assert stat.S_IMODE((vol / "file").stat().st_mode) == 0o640
    assert (vol / "file").stat().st_mtime_ns == 1_000_000_000
    assert stat.S_IMODE((vol / "sub").stat().st_mode) == 0o710
    assert (vol / "sub" / "deep").read_text() == "deep\n"
    assert os.readlink(vol / "rel-link") == "file"
    assert os.readlink(vol / "abs-link") == "/etc/passwd"
    assert (vol / "hard").stat().st_ino == (vol / "file").stat().st_ino
    assert stat.S_ISFIFO((vol / "fifo").lstat().st_mode)
    assert stat.S_IMODE((vol / "fifo").lstat().st_mode) == 0o620
    # the volume's top directory takes the image directory's mode and owner
    assert stat.S_IMODE(vol.stat().st_mode) == 0o705
    assert vol.stat().st_uid == (rootfs / "data").stat().st_uid


def test_missing_or_non_directory_paths_copy_nothing(rootfs: Path, tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    assert fill(rootfs, "/nosuch", vol) is False
    assert fill(rootfs, "/data/file", vol) is False
    assert fill(rootfs, "/data/rel-link", vol) is False   # a link to a file
    assert is_empty(vol)


@pytest.mark.parametrize("link", ["ABS", "REL"])
def test_a_symlinked_mount_point_resolves_inside_the_rootfs(rootfs: Path, tmp_path: Path,
                                                            link: str) -> None:
    outside = tmp_path / "host-secret-dir"
    outside.mkdir()
    (outside / "SECRET").write_text("host data\n")
    target = str(outside) if link == "ABS" else "../../../../../../.." + str(outside)
    os.symlink(target, rootfs / "escape")
    vol = tmp_path / "vol"
    vol.mkdir()
    # inside the rootfs that path does not exist: nothing is read from the host
    assert fill(rootfs, "/escape", vol) is False
    assert is_empty(vol)
    # a link that stays inside the rootfs is followed there (Docker resolves in the rootfs)
    os.symlink("/data" if link == "ABS" else "../data", rootfs / "inside")
    assert fill(rootfs, "/inside", vol) is True
    assert (vol / "file").read_text() == "content\n"
    # and once the same path exists inside the rootfs, that is what is copied
    vol2 = tmp_path / "vol2"
    vol2.mkdir()
    mirrored = rootfs / str(outside).lstrip("/")
    mirrored.mkdir(parents=True)
    (mirrored / "from-rootfs").write_text("image\n")
    assert fill(rootfs, "/escape", vol2) is True
    assert sorted(p.name for p in vol2.iterdir()) == ["from-rootfs"]
    assert sorted(p.name for p in outside.iterdir()) == ["SECRET"]


def test_a_parent_component_symlink_cannot_escape(rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "shadow").write_text("root:secret\n")
    os.symlink("../../../../../../../../" + str(outside).lstrip("/"), rootfs / "up")
    vol = tmp_path / "vol"
    vol.mkdir()
    assert fill(rootfs, "/up/etc", vol) is False
    assert fill(rootfs, "/data/../../../up/etc", vol) is False
    assert is_empty(vol)


def test_too_deep_trees_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fill_mod, "MAX_DEPTH", 5)
    root = tmp_path / "rootfs"
    (root / "data" / "a" / "b" / "c" / "d" / "e" / "f").mkdir(parents=True)
    vol = tmp_path / "vol"
    vol.mkdir()
    with pytest.raises(InvalidArgument, match="deeper than 5 levels"):
        fill(root, "/data", vol)
    ok = tmp_path / "ok"
    ok.mkdir()
    (root / "shallow" / "a" / "b").mkdir(parents=True)
    assert fill(root, "/shallow", ok) and (ok / "a" / "b").is_dir()


class Rootfs:
    """Stands in for mounting a container's snapshot: yields a directory, counts entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entered = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Path]:
        self.entered += 1
        yield self.path


def test_populate_fills_only_new_empty_volumes(rootfs: Path, tmp_path: Path) -> None:
    svc = VolumeService(tmp_path / "volumes", durable=False)
    opener = Rootfs(rootfs)
    svc.create("used")
    (svc.mountpoint("used") / "mine").write_text("x")
    svc.create("fresh")
    svc.create("nocopy")
    svc.create("tmp", driver_opts={"type": "tmpfs"})
    mounts = [Mount("used"), Mount("fresh", "/data/sub"), Mount("nocopy", nocopy=True),
              Mount("tmp"), Mount("", "/data", type="bind")]
    svc.populate("c1", mounts, opener)
    assert opener.entered == 1
    assert sorted(p.name for p in svc.mountpoint("used").iterdir()) == ["mine"]
    assert sorted(p.name for p in svc.mountpoint("fresh").iterdir()) == ["deep"]
    assert is_empty(svc.mountpoint("nocopy")) and is_empty(svc.mountpoint("tmp"))
    assert svc.get("fresh").filled and not svc.get("nocopy").filled
    # filled once: emptied later, it is never filled again (and the rootfs is not mounted)
    (svc.mountpoint("fresh") / "deep").unlink()
    svc.populate("c2", [Mount("fresh", "/data")], opener)
    assert opener.entered == 1 and is_empty(svc.mountpoint("fresh"))
    assert VolumeService(tmp_path / "volumes").get("fresh").filled   # persisted
    # a new volume over a path the image lacks stays new
    svc.create("later")
    svc.populate("c3", [Mount("later", "/nosuch")], opener)
    assert opener.entered == 2 and not svc.get("later").filled
