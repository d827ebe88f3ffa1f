"""The docker cp tar writer on a real filesystem as root: file capabilities
(``security.capability`` needs CAP_SETFCAP to set) travel in the PAX record dockerd writes."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from pydeskd.daemon.containers.archive_fs import ContainerFS
from pydeskd.daemon.containers.archive_tar import tar_stream


def test_tar_stream_carries_file_capabilities(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "ping").write_bytes(b"elf")
    # VFS_CAP_REVISION_2 with CAP_NET_RAW (bit 13) permitted and effective.
    value = bytes.fromhex("01000002") + (1 << 13).to_bytes(4, "little") + bytes(12)
    os.setxattr(root / "ping", "security.capability", value)
    with ContainerFS(str(root)) as fs:
        data = b"".join(tar_stream(fs, fs.locate(()), ""))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        pax = tar.getmember("ping").pax_headers
    assert pax["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == value
