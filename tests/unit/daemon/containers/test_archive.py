"""docker cp's pure parts and confinement decisions, on plain directories (no root needed):
the stat header, path requests, in-scope symlink resolution through mounts, the tar stream and
confined extraction."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument, NotFound
from pydeskd.daemon.containers.archive import (
    GO_MODE_DIR,
    GO_MODE_SYMLINK,
    PathStat,
    Request,
    extract,
    go_file_mode,
    stat_in,
)
from pydeskd.daemon.containers.archive_fs import ContainerFS, MountPoint, mount_points
from pydeskd.daemon.containers.archive_tar import tar_stream


def test_go_file_mode_bits() -> None:
    assert go_file_mode(stat.S_IFREG | 0o644) == 0o644
    assert go_file_mode(stat.S_IFDIR | 0o755) == GO_MODE_DIR | 0o755
    assert go_file_mode(stat.S_IFLNK | 0o777) == GO_MODE_SYMLINK | 0o777
    assert go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755
    assert go_file_mode(stat.S_IFDIR | stat.S_ISVTX | 0o777) == GO_MODE_DIR | (1 << 20) | 0o777


def test_stat_header_is_base64_json() -> None:
    st = PathStat("f", 3, 0o644, "2024-01-02T03:04:05.5Z", "")
    decoded = json.loads(base64.b64decode(st.header()))
    assert decoded == {"name": "f", "size": 3, "mode": 0o644,
                       "mtime": "2024-01-02T03:04:05.5Z", "linkTarget": ""}


@pytest.mark.parametrize(("path", "parts", "follow", "name"), [
    ("/etc/passwd", ("etc", "passwd"), False, "passwd"),
    ("/etc/", ("etc",), True, "etc"),
    ("/etc/.", ("etc",), True, "."),
    ("/", (), True, "/"),
    ("a/../../b", ("b",), False, "b"),
])
def test_request_parse(path: str, parts: tuple[str, ...], follow: bool, name: str) -> None:
    assert Request.parse(path) == Request(parts, follow, name)


def test_request_empty_path_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        Request.parse("")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A rootfs with hostile symlinks, a volume, and a host sentinel outside both."""
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "shadow").write_text("HOST SECRET")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "shadow").write_text("container shadow")
    (rootfs / "escape").symlink_to("/")
    (rootfs / "up").symlink_to("../../../../host")
    (rootfs / "hostetc").symlink_to(str(host / "etc"))
    (rootfs / "loop").symlink_to("loop")
    (rootfs / "data").mkdir()
    (rootfs / "data" / "hidden").write_text("under the mount")
    (rootfs / "todata").symlink_to("/data/sub")
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "v").write_text("in the volume")
    return {"host": host, "rootfs": rootfs, "volume": volume}


def _fs(tree: dict[str, Path], read_only: bool = False) -> ContainerFS:
    return ContainerFS(str(tree["rootfs"]),
                       [MountPoint(("data",), str(tree["volume"]), read_only, True)])


def test_absolute_symlinks_resolve_inside_the_rootfs(tree: dict[str, Path]) -> None:
    with _fs(tree) as fs:
        loc = fs.resolve("/escape/etc/shadow", follow_last=True)
        assert loc.root == str(tree["rootfs"]) and loc.parts == ("etc", "shadow")
        loc = fs.resolve("/up/etc/shadow", follow_last=True)
        assert loc.root == str(tree["rootfs"])
        assert loc.container_path == ("host", "etc", "shadow")  # missing: not the host's
        assert fs.lstat(loc) is None
        loc = fs.resolve("/hostetc/shadow", follow_last=True)
        assert loc.root == str(tree["rootfs"])
        assert fs.lstat(loc) is None


def test_paths_under_a_mount_go_to_its_source(tree: dict[str, Path]) -> None:
    with _fs(tree) as fs:
        loc = fs.resolve("/todata/v", follow_last=False)
        assert loc.root == str(tree["volume"]) and loc.parts == ("sub", "v")
        assert loc.mount is not None
        loc = fs.resolve("/data/hidden", follow_last=False)
        assert fs.lstat(loc) is None  # the rootfs file under the mount is not seen


def test_symlink_loop_is_an_error(tree: dict[str, Path]) -> None:
    with _fs(tree) as fs, pytest.raises(InvalidArgument):
        fs.resolve("/loop/x", follow_last=True)


def test_stat_of_a_symlink_names_its_resolved_target(tree: dict[str, Path]) -> None:
    with _fs(tree) as fs:
        st, _ = stat_in(fs, "/todata", "c1")
        assert st.mode & GO_MODE_SYMLINK
        assert st.link_target == "/data/sub"
        st, _ = stat_in(fs, "/escape/etc/shadow", "c1")
        assert st.size == len("container shadow")
        with pytest.raises(NotFound, match="Could not find the file /nope in container c1"):
            stat_in(fs, "/nope", "c1")


def _names(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_tar_stream_includes_mounts_and_keeps_symlinks(tree: dict[str, Path]) -> None:
    with _fs(tree) as fs:
        loc = fs.resolve("/", follow_last=True)
        members = _names(b"".join(tar_stream(fs, loc, "root")))
    assert members["root/escape"].issym() and members["root/escape"].linkname == "/"
    assert "root/data/sub/v" in members and "root/data/hidden" not in members
    assert not any("HOST" in n or n.startswith("root/escape/") for n in members)


def test_tar_stream_of_a_file_and_hardlinks(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "a").write_bytes(b"x" * 1000)
    os.link(root / "a", root / "b")
    with ContainerFS(str(root)) as fs:
        members = _names(b"".join(tar_stream(fs, fs.locate(()), "")))
        assert members["a"].isreg() and members["a"].size == 1000
        assert members["b"].islnk() and members["b"].linkname == "a"
        one = _names(b"".join(tar_stream(fs, fs.resolve("/a", False), "renamed")))
        assert list(one) == ["renamed"]


def _tar(*entries: tuple[str, bytes | None, str]) -> io.BytesIO:
    """(name, data or None for a symlink/dir, linkname or 'dir')"""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            elif link == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = link
                tar.addfile(info)
    buf.seek(0)
    return buf


def _extract(dest: Path, stream: io.BytesIO, **kw: object) -> None:
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        extract(stream, fd, **kw)  # type: ignore[arg-type]
    finally:
        os.close(fd)


def test_extract_refuses_dotdot_and_confines_symlinked_parents(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("untouched")
    with pytest.raises(InvalidArgument):
        _extract(dest, _tar(("../sentinel", b"evil", "")))
    with pytest.raises(InvalidArgument, match="dangling"):  # /tmp/... inside dest: missing
        _extract(dest, _tar(("l", None, str(tmp_path)), ("l/sentinel", b"evil", "")))
    _extract(dest, _tar(("up", None, "../../.."), ("up/sentinel", b"evil", "")))
    assert sentinel.read_text() == "untouched"
    assert (dest / "sentinel").read_text() == "evil"  # ``..`` of a symlink stops at dest


def test_extract_no_overwrite_dir_non_dir_and_owner(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    with pytest.raises(InvalidArgument, match="cannot overwrite directory"):
        _extract(dest, _tar(("d", b"file", "")), no_overwrite_dir_non_dir=True)
    _extract(dest, _tar(("f", b"file", "")))
    with pytest.raises(InvalidArgument, match="cannot overwrite non-directory"):
        _extract(dest, _tar(("f", None, "dir")), no_overwrite_dir_non_dir=True)
    _extract(dest, _tar(("d", b"file", "")))  # allowed without the flag
    assert (dest / "d").read_bytes() == b"file"


def test_extract_copies_whiteout_names_literally(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "keep").write_text("k")
    (dest / "sub" / "x").write_text("x")
    _extract(dest, _tar((".wh.keep", b"wh", ""), ("sub/.wh..wh..opq", b"", ""),
                        (".wh..wh.plnk", None, "dir"), ("sub/.wh.l", None, "../keep")))
    assert (dest / "keep").read_text() == "k"
    assert (dest / ".wh.keep").read_text() == "wh"
    assert (dest / "sub" / "x").exists() and (dest / "sub" / ".wh..wh..opq").exists()
    assert os.readlink(dest / "sub" / ".wh.l") == "../keep"
    assert not (dest / ".wh..wh.plnk").exists()  # aufs metadata: skipped


def test_mount_points_from_a_record() -> None:
    mounts = mount_points(
        [{"type": "volume", "destination": "/data/", "source": "/v/_data", "read_only": False},
         {"type": "tmpfs", "destination": "/run", "source": "tmpfs"},
         {"type": "bind", "destination": "/etc/hosts", "source": "/x/hosts", "read_only": True}],
        {"/etc/hosts": "/c/hosts", "/etc/hostname": "/c/hostname"})
    assert [(m.destination, m.source, m.read_only) for m in mounts] == [
        (("data",), "/v/_data", False), (("etc", "hosts"), "/x/hosts", True),
        (("etc", "hostname"), "/c/hostname", False)]


def test_a_symlink_swapped_in_after_resolution_is_refused(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host")
    root = tmp_path / "rootfs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "secret").write_text("container")
    with ContainerFS(str(root)) as fs:
        loc = fs.resolve("/a/secret", follow_last=False)
        (root / "a" / "secret").unlink()
        (root / "a").rmdir()
        (root / "a").symlink_to(host)  # the running container races the walk
        with pytest.raises(OSError):
            fs.open_parent(loc)
        with pytest.raises(OSError):
            b"".join(tar_stream(fs, loc, "secret"))


def test_tar_stream_keeps_names_that_are_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    name = os.fsdecode(b"caf\xe9")
    (root / name).write_text("x")
    with ContainerFS(str(root)) as fs:
        data = b"".join(tar_stream(fs, fs.locate(()), ""))
    with tarfile.open(fileobj=io.BytesIO(data), errors="surrogateescape") as tar:
        assert [os.fsencode(n) for n in tar.getnames()] == [b"caf\xe9"]

