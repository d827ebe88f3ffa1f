"""The guest side's own reads never go through a symlink in the middle of a path: a container
that swaps a directory of the copy for a link (RENAME_EXCHANGE) makes ``get`` and the change
reports see nothing there, not the files behind the link (review 7, unconfirmed finding)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydeskd.syncd import wire
from pydeskd.syncd.server import Server


def messages(fd: int) -> list[tuple[dict[str, Any], bytes]]:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return list(wire.FrameReader().feed(data))


def test_get_and_change_reports_below_a_swapped_link_see_nothing(tmp_path: Path) -> None:
    root, outside = tmp_path / "copy", tmp_path / "etc"
    root.mkdir()
    outside.mkdir()
    (outside / "shadow").write_text("root:SECRET")
    os.symlink(str(outside), root / "d")  # was a directory when the host asked
    r, w = os.pipe()
    try:
        server = Server(str(root), infd=-1, outfd=w)
        server.handle({"t": "get", "paths": ["d/shadow"], "tag": "pull"}, b"")
        server.pending = {"d/shadow": None}
        server.flush_changes()
        got = messages(r)
    finally:
        os.close(r)
        os.close(w)
    assert all(b"SECRET" not in data for _, data in got)
    put = [wire.split_put(h, d) for h, d in got if h["t"] == "put"]
    assert [op["o"] for ops in put for op, _ in ops] == ["rm"]
    [changes] = [h for h, _ in got if h["t"] == "changes"]
    assert changes["c"] == [["d/shadow", None]]
