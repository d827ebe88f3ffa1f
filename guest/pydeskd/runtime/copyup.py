"""``tmpcopyup``: a tmpfs mounted over a directory starts with a copy of that directory.

runc's OCI extension, used for tmpfs mounts over image content: the tmpfs is mounted on a
temporary directory, the covered directory's tree is copied into it (modes, owners, links,
device nodes and times kept), then the tmpfs is moved over the directory. Runs in the init's
private mount namespace; the temporary directory is removed again.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from pydeskd.runtime import syscalls as sc
from pydeskd.runtime.syscalls import Syscalls


def copy_tree(source: str, target: str) -> None:
    """Copies the contents of source into the existing directory target, as they are."""
    for name in os.listdir(source):
        src = os.path.join(source, name)
        dst = os.path.join(target, name)
        info = os.lstat(src)
        if stat.S_ISDIR(info.st_mode):
            os.mkdir(dst, stat.S_IMODE(info.st_mode))
            copy_tree(src, dst)
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(info.st_mode):
            shutil.copyfile(src, dst, follow_symlinks=False)
        else:  # fifos, sockets and device nodes are made anew
            os.mknod(dst, info.st_mode, info.st_rdev)
        os.lchown(dst, info.st_uid, info.st_gid)
        if not stat.S_ISLNK(info.st_mode):
            os.chmod(dst, stat.S_IMODE(info.st_mode))
        os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def mount_with_copy_up(sys: Syscalls, source: str, target: str, flags: int, data: str) -> None:
    """Mounts a tmpfs holding a copy of target's contents over target."""
    staging = tempfile.mkdtemp(prefix="pydesk-copyup-")
    try:
        sys.mount(source, staging, "tmpfs", flags, data)
        try:
            copy_tree(target, staging)
            sys.mount(staging, target, "", sc.MS_MOVE, "")
        except BaseException:
            sys.umount2(staging, sc.MNT_DETACH)
            raise
    finally:
        os.rmdir(staging)
