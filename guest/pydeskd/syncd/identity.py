"""The identity of one guest copy: a random id and a generation, kept on the copy's root directory.

What it is for: the host keeps the agreed state of a root (what both sides had when they last
agreed) and trusts it only for *the same* guest copy, as new as when it was saved. A copy that
was removed (``rm -rf`` to free space, a new data disk) comes back without its identity, so with
a new id; a copy older than the host's state (the guest lost writes it had acknowledged) has a
lower generation. Either way the host merges instead of taking the copy's missing or older
files for deletions and edits made in the guest.
The identity is an extended attribute of the copy's root directory (``user.pydesk.sync``,
JSON): it goes with the directory, and containers binding the copy see no extra file in it.
:meth:`CopyIdentity.commit` makes everything applied so far durable (``syncfs`` on the copy's
filesystem), then records the host's generation durably: the host saves its agreed state only
after that.
What it must never do: report a generation before the data it stands for is on disk, or let a
broken or unsupported attribute stop the session (an unknown identity is always safe: the host
then merges).
"""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Callable

XATTR = "user.pydesk.sync"


def syncfs(path: str) -> None:
    """Flushes the filesystem holding ``path`` (libc ``syncfs``; ``sync`` where libc is not
    found by name). Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            os.sync()
            return
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


class CopyIdentity:
    def __init__(self, root: str, flush_disk: Callable[[str], None] = syncfs) -> None:
        self.root = root
        self.flush_disk = flush_disk
        # Empty when the filesystem keeps no extended attributes: never trusted by the host.
        self.copy_id = ""
        self.gen = 0

    def load(self) -> None:
        """Reads the identity, or makes a new one (generation 0) when it is missing or broken."""
        try:
            raw = json.loads(os.getxattr(self.root, XATTR, follow_symlinks=False))
            copy_id, gen = raw["id"], raw["gen"]
            if not isinstance(copy_id, str) or len(copy_id) < 16 or not isinstance(gen, int):
                raise ValueError("not an identity")
            self.copy_id, self.gen = copy_id, gen
            return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self.copy_id, self.gen = os.urandom(16).hex(), 0
        try:
            self._write()
        except OSError:
            self.copy_id = ""

    def commit(self, gen: int) -> None:
        """Everything applied so far reaches the disk, then generation ``gen`` is recorded.
        Raises OSError (then nothing is claimed: the host does not save)."""
        self.flush_disk(self.root)
        self.gen = max(self.gen, gen)
        if self.copy_id:
            self._write()

    def _write(self) -> None:
        body = json.dumps({"id": self.copy_id, "gen": self.gen}).encode()
        os.setxattr(self.root, XATTR, body, follow_symlinks=False)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the attribute is metadata of the root's inode: journaled with it
        finally:
            os.close(fd)
