"""Issue 7, passthrough mode: the desktop scenario on this Linux host against a native pydeskd,
no VM, no proxy, no sync (the bind mount is the host directory itself)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.integration.cli.conftest import pydesk
from tests.support.desktop_scenario import run_site_scenario
from tests.support.pydeskd import Pydeskd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_publish_bind_edit_and_browser_without_a_vm(d: Pydeskd, tmp_path: Path) -> None:
    measured = run_site_scenario(lambda *args: pydesk(d, *args), tmp_path / "site",
                                 free_port(), "busybox")
    mounts = json.loads(pydesk(d, "inspect", "-f", "{{json .Mounts}}", measured.container).stdout)
    # the host directory itself: nothing synced
    assert [m["Source"] for m in mounts] == [str(tmp_path / "site")]
    pydesk(d, "rm", "-f", measured.container)
