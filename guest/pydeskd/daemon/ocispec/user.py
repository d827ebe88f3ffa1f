"""``--user name[:group]`` resolved against the image's /etc/passwd and /etc/group.

Semantics of runc's libcontainer/user GetExecUser, which Docker uses: a name must exist in
passwd, a number need not; without a group, the primary group is the passwd entry's and the
supplementary groups are those listing the user; ``GroupAdd`` entries are names from
/etc/group or numbers. The files are read **inside the rootfs only**: the kernel resolves
their paths inside it (``openat2`` with ``RESOLVE_IN_ROOT``: an absolute or ``..`` symlink
stays in the rootfs, also when a running container swaps a component for a symlink while we
look), so neither an image nor a container can make the daemon read a host file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydeskd.containerd.archive.confine import Root
from pydeskd.containerd.errors import InvalidArgument

MAX_ID = 2**31 - 1
_MAX_FILE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]  # Docker lists the primary gid first
    home: str = "/"


def read_rootfs_file(rootfs: str, path: str) -> str | None:
    """A small text file of the container, or None if it is absent (or not a regular file)."""
    try:
        with Root(rootfs) as root:
            fd = root.open(tuple(p for p in path.split("/") if p), os.O_RDONLY | os.O_NONBLOCK)
    except InvalidArgument:  # a symlink loop
        return None
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR):
            return None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None  # a fifo or device planted at /etc/passwd is never read
        return f.read(_MAX_FILE).decode("utf-8", errors="replace")


def _entries(text: str | None, fields: int) -> Iterator[list[str]]:
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        yield parts + [""] * (fields - len(parts))


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _check_range(value: int) -> int:
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument("uids and gids must be in range 0-2147483647")
    return value


def resolve_user(rootfs: str, spec: str, group_add: Iterable[str] = ()) -> ExecUser:
    """(uid, gid, additional gids) for ``spec`` ("", "name", "uid", "name:group", "uid:gid").

    Raises InvalidArgument with runc's messages ("unable to find user X: no matching entries
    in passwd file").
    """
    user_arg, has_group, group_arg = spec.partition(":")
    passwd = read_rootfs_file(rootfs, "/etc/passwd")
    group_text = read_rootfs_file(rootfs, "/etc/group")
    uid, gid, home, name = 0, 0, "/", ""
    user_num = _number(user_arg)
    matched = None
    if user_arg:
        for entry in _entries(passwd, 7):
            if entry[0] == user_arg or (user_num is not None and entry[2] == user_arg):
                matched = entry
                break
    if matched is not None:
        name = matched[0]
        uid = _number(matched[2]) or 0
        gid = _number(matched[3]) or 0
        home = matched[5] or "/"
    elif user_arg:
        if user_num is None:
            raise InvalidArgument(f"unable to find user {user_arg}: no matching entries in "
                                  "passwd file")
        uid = _check_range(user_num)
    elif passwd is not None:
        for entry in _entries(passwd, 7):
            if entry[2] == "0":
                name, home = entry[0], entry[5] or "/"
                gid = _number(entry[3]) or 0
                break
    supplementary: list[int] = []
    if has_group and group_arg:
        gid = _find_group(group_text, group_arg)
    elif name:
        for entry in _entries(group_text, 4):
            number = _number(entry[2])
            if number is not None and number != gid and name in entry[3].split(","):
                supplementary.append(number)
    # GroupAdd is a set in runc (Docker's order is Go map order); pydesk keeps the request's
    # order and drops repeats.
    added = dict.fromkeys(_find_group(group_text, g, additional=True) for g in group_add)
    supplementary += added
    return ExecUser(_check_range(uid), _check_range(gid), (gid, *supplementary), home)


def _find_group(group_text: str | None, wanted: str, additional: bool = False) -> int:
    number = _number(wanted)
    for entry in _entries(group_text, 4):
        if entry[0] == wanted or (number is not None and entry[2] == wanted):
            found = _number(entry[2])
            if found is not None:
                return _check_range(found)
    if number is not None:
        return _check_range(number)
    if additional:
        raise InvalidArgument(f"Unable to find group {wanted}")
    raise InvalidArgument(f"unable to find group {wanted}: no matching entries in group file")
