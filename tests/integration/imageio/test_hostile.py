"""Hostile archives: each is refused, and nothing is committed, recorded or left behind."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.imageio import _archive, docker_archive
from tests.integration.imageio.helpers import Stores, layer_tar, stores

LAYER = layer_tar({"etc/hostname": b"evil\n"})
# Incompressible, so that its gzip'd blob is larger than a member kept in memory.
BIG = layer_tar({"big": random.Random(1).randbytes(3_000_000)})


def good_archive(tmp_path: Path) -> bytes:
    with stores(tmp_path / "src") as s:
        s.images.put("victim", s.image([LAYER, BIG]))
        out = io.BytesIO()
        docker_archive.save(out, s.content, [s.images.resolve("victim")])
        return out.getvalue()


def rewrite(data: bytes, change: Callable[[tarfile.TarInfo, bytes], tuple[tarfile.TarInfo,
                                                                           bytes] | None],
            extra: list[tuple[tarfile.TarInfo, bytes]] | None = None) -> bytes:
    """Copy a tar, letting ``change`` alter (or drop, returning None) each member."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as dst:
        for info in src:
            f = src.extractfile(info)
            body = f.read() if f else b""
            changed = change(info, body)
            if changed is not None:
                new_info, new_body = changed
                dst.addfile(new_info, io.BytesIO(new_body) if new_info.isreg() else None)
        for info, body in extra or []:
            dst.addfile(info, io.BytesIO(body) if info.isreg() else None)
    return out.getvalue()


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
           link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info, data


def assert_nothing_committed(s: Stores) -> None:
    assert s.blobs() == {}
    assert s.images.all() == []
    assert s.ingests() == []
    assert s.leases.list() == []


def refuse(tmp_path: Path, data: bytes, match: str) -> None:
    with stores(tmp_path / "dst") as s:
        with pytest.raises(InvalidArgument, match=match):
            docker_archive.load(io.BytesIO(data), s.content, s.ctx)
        assert_nothing_committed(s)


def test_good_archive_loads(tmp_path: Path) -> None:
    with stores(tmp_path / "dst") as s:
        docker_archive.load(io.BytesIO(good_archive(tmp_path)), s.content, s.ctx)
        assert s.images.resolve("victim")


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "blobs/../../evil", "a\\..\\b"])
def test_traversal_names(tmp_path: Path, name: str) -> None:
    data = rewrite(good_archive(tmp_path), lambda i, b: (i, b), [member(name, b"x")])
    refuse(tmp_path, data, "invalid archive member name")


@pytest.mark.parametrize("link", ["../../etc/passwd", "/etc/passwd"])
def test_symlink_out_of_the_archive(tmp_path: Path, link: str) -> None:
    data = rewrite(good_archive(tmp_path), lambda i, b: (i, b),
                   [member("blobs/escape", kind=tarfile.SYMTYPE, link=link)])
    refuse(tmp_path, data, "archive link")


def test_hardlink_out_of_the_archive(tmp_path: Path) -> None:
    data = rewrite(good_archive(tmp_path), lambda i, b: (i, b),
                   [member("x", kind=tarfile.LNKTYPE, link="../outside")])
    refuse(tmp_path, data, "outside the archive")


def test_dangling_link_in_the_archive(tmp_path: Path) -> None:
    data = rewrite(good_archive(tmp_path), lambda i, b: (i, b),
                   [member("x", kind=tarfile.SYMTYPE, link="nothing/here")])
    refuse(tmp_path, data, "points at nothing")


def test_device_node(tmp_path: Path) -> None:
    data = rewrite(good_archive(tmp_path), lambda i, b: (i, b),
                   [member("dev", kind=tarfile.CHRTYPE)])
    refuse(tmp_path, data, "not a regular file")


def test_blob_with_the_wrong_digest(tmp_path: Path) -> None:
    def corrupt(info: tarfile.TarInfo, body: bytes) -> tuple[tarfile.TarInfo, bytes]:
        if info.name.startswith("blobs/sha256/") and len(body) > 1_000_000:
            body = body[:-1] + bytes([body[-1] ^ 1])
        return info, body

    refuse(tmp_path, rewrite(good_archive(tmp_path), corrupt), "has digest")


def test_blob_swapped_for_another(tmp_path: Path) -> None:
    """Every blob present and self-consistent, but one is replaced by a blob of another name."""
    def swap(info: tarfile.TarInfo, body: bytes) -> tuple[tarfile.TarInfo, bytes]:
        if info.name.startswith("blobs/sha256/") and len(body) > 1_000_000:
            info.size = len(LAYER)
            return info, LAYER
        return info, body

    refuse(tmp_path, rewrite(good_archive(tmp_path), swap), "has digest")


def test_truncated_stream(tmp_path: Path) -> None:
    data = good_archive(tmp_path)
    refuse(tmp_path, data[: len(data) // 2], "truncated|invalid tar|unexpected end")


def test_header_size_larger_than_data(tmp_path: Path) -> None:
    """A header claims more bytes than follow: the member swallows the next headers."""
    data = good_archive(tmp_path)
    raw = bytearray(data)
    # The first blob header: bump its size field (octal, bytes 124-135) by 10 blocks.
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        first = next(i for i in tar if i.isreg())
    header = first.offset
    size = int(raw[header + 124:header + 135].decode().strip("\0 ") or "0", 8) + 5120
    raw[header + 124:header + 136] = f"{size:011o}\0".encode()
    raw[header + 148:header + 156] = b" " * 8
    checksum = sum(raw[header:header + 512])
    raw[header + 148:header + 156] = f"{checksum:06o}\0 ".encode()
    with stores(tmp_path / "dst") as s:
        with pytest.raises(InvalidArgument):
            docker_archive.load(io.BytesIO(bytes(raw)), s.content, s.ctx)
        assert_nothing_committed(s)


def test_header_size_smaller_than_data(tmp_path: Path) -> None:
    """A header claims fewer bytes: the rest is parsed as a header, which tarfile would take
    as the end of the archive; the leftover data must make it an error instead."""
    data = good_archive(tmp_path)
    raw = bytearray(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        big = next(i for i in tar if i.isreg() and i.size > 1_000_000)
    header = big.offset
    raw[header + 124:header + 136] = f"{big.size - 4096:011o}\0".encode()
    raw[header + 148:header + 156] = b" " * 8
    raw[header + 148:header + 156] = f"{sum(raw[header:header + 512]):06o}\0 ".encode()
    with stores(tmp_path / "dst") as s:
        with pytest.raises(InvalidArgument):
            docker_archive.load(io.BytesIO(bytes(raw)), s.content, s.ctx)
        assert_nothing_committed(s)


def test_descriptor_size_lies(tmp_path: Path) -> None:
    """index.json says a size other than the blob's: refused before any commit."""
    def lie(info: tarfile.TarInfo, body: bytes) -> tuple[tarfile.TarInfo, bytes]:
        if info.name == "index.json":
            index = json.loads(body)
            index["manifests"][0]["size"] += 1
            body = json.dumps(index).encode()
            info.size = len(body)
        return info, body

    refuse(tmp_path, rewrite(good_archive(tmp_path), lie), "descriptor says")


def test_missing_layer(tmp_path: Path) -> None:
    def drop(info: tarfile.TarInfo, body: bytes) -> tuple[tarfile.TarInfo, bytes] | None:
        return None if len(body) > 1_000_000 else (info, body)

    refuse(tmp_path, rewrite(good_archive(tmp_path), drop), "missing from the archive")


def test_duplicate_member(tmp_path: Path) -> None:
    data = rewrite(good_archive(tmp_path), lambda i, b: (i, b), [member("index.json", b"{}")])
    refuse(tmp_path, data, "appears twice")


def test_legacy_layer_with_wrong_diff_id(tmp_path: Path) -> None:
    from tests.integration.imageio.test_save_load import legacy_archive

    data = legacy_archive([LAYER], diff_ids=["sha256:" + "0" * 64])
    refuse(tmp_path, data, "invalid diffID for layer 0")


def test_not_a_tar(tmp_path: Path) -> None:
    refuse(tmp_path, b"this is not a tar archive" * 100, "invalid tar|invalid image archive")


def test_large_members_spooled_are_aborted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          ) -> None:
    """Members spooled into ingests (not memory) are aborted when verification fails."""
    monkeypatch.setattr(_archive, "SMALL_MEMBER", 100)
    data = rewrite(good_archive(tmp_path), lambda i, b: (i, b), [member("../evil", b"x")])
    refuse(tmp_path, data, "invalid archive member name")
