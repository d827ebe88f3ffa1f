"""A reproducible cpio ("newc") writer for the guest initramfs.

What it is for: the initramfs is a handful of entries (busybox, its applet links, a few kernel
modules, the init script); writing the archive here rather than with ``cpio`` makes it
byte-for-byte reproducible (fixed times, owners and inode numbers, sorted entries) and needs no
tool on the builder. What it must never do: read file metadata from the disk it is given (owner,
time): only contents, and modes as the caller says.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    path: str
    """Inside the archive, without a leading slash (``bin/busybox``)."""
    mode: int
    """Full st_mode (file type bits included)."""
    data: bytes = b""
    """File contents, or the symlink target."""


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry_mode: tuple[int, int], mtime: int, size: int, name: bytes) -> bytes:
    mode, nlink = entry_mode
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def archive(entries: list[Entry], mtime: int) -> bytes:
    """The newc archive of ``entries`` (sorted by path, parents before children)."""
    out = bytearray()
    for ino, entry in enumerate(sorted(entries, key=lambda e: e.path), start=1):
        name = entry.path.strip("/").encode()
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        head = _header(ino, (entry.mode, nlink), mtime, len(entry.data), name)
        out += head + name + b"\0"
        out += _pad(len(head) + len(name) + 1)
        out += entry.data + _pad(len(entry.data))
    head = _header(0, (0, 1), 0, 0, TRAILER.encode())
    out += head + TRAILER.encode() + b"\0" + _pad(len(head) + len(TRAILER) + 1)
    return bytes(out)
