"""Docker's tmpfs option merging and bind options."""

from __future__ import annotations

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.ocispec import bind_mount, merge_tmpfs_options, tmpfs_mount


@pytest.mark.parametrize(("options", "expected"), [
    (["noexec", "nosuid", "nodev", "rprivate", "size=1m", "exec"],
     ["nosuid", "nodev", "rprivate", "size=1m", "exec"]),
    (["rprivate", "size=1m", "size=2m", "shared"], ["size=2m", "shared"]),
    (["ro", "rw", "defaults", "mode=1777", "uid=1000"], ["rw", "mode=1777", "uid=1000"]),
])
def test_merge(options: list[str], expected: list[str]) -> None:
    assert merge_tmpfs_options(options) == expected


def test_merge_rejects_unknown_data() -> None:
    with pytest.raises(InvalidArgument, match="invalid tmpfs option"):
        merge_tmpfs_options(["foo=bar"])
    with pytest.raises(InvalidArgument):
        tmpfs_mount("/x", "bogus")


def test_tmpfs_and_bind() -> None:
    assert tmpfs_mount("/run", "").options == ("noexec", "nosuid", "nodev", "rprivate")
    assert bind_mount("/a", "/b").options == ("rbind", "rprivate")
    assert bind_mount("/a", "/b", read_only=True, propagation="rslave",
                      recursive=False).options == ("bind", "ro", "rslave")
