"""Bind-mount sync over the real SSH exec transport into a booted guest (TCG).

One boot: the first sync of a small tree lands under the guest's data disk
(/var/lib/pydesk/sync/<key>/, run by the image's python), a host edit is visible in the guest
copy within a second or two under TCG, and a file written in the guest comes back to the host.
The logic is covered by tests/unit/sync and tests/integration/sync; this checks the transport,
the guest interpreter and paths.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from pydesk.sync.manager import GUEST_SYNC_BASE, SyncManager
from pydesk.sync.transport import ssh_factory
from tests.vm.vmdriver import VmDriver


def guest_cat(chan: object, path: str) -> bytes | None:
    result = chan.exec(f"cat {shlex.quote(path)}")  # type: ignore[attr-defined]
    return bytes(result.stdout) if result.status == 0 else None


def test_sync_into_the_guest_over_ssh(vm: VmDriver, tmp_path: Path) -> None:
    host = tmp_path / "site"
    (host / "sub").mkdir(parents=True)
    (host / "index.html").write_text("<h1>v1</h1>\n")
    (host / "sub/data.bin").write_bytes(os.urandom(300_000))
    os.symlink("index.html", host / "link")
    vm.cli("vm", "start", "--disk-size", "4G", "--memory", "1G")
    reports: list[tuple[str, str]] = []
    with vm.channel() as chan:
        manager = SyncManager(ssh_factory(lambda: chan.transport), tmp_path / "state",
                              lambda message, error: reports.append((message, error)))
        try:
            guest = manager.guest_path(str(host))
            assert guest.startswith(GUEST_SYNC_BASE + "/"), guest
            assert guest_cat(chan, f"{guest}/index.html") == b"<h1>v1</h1>\n"
            assert guest_cat(chan, f"{guest}/sub/data.bin") == (host / "sub/data.bin").read_bytes()
            assert chan.exec(f"readlink {guest}/link").stdout.strip() == b"index.html"

            (host / "index.html").write_text("<h1>v2</h1>\n")
            start = time.monotonic()
            while guest_cat(chan, f"{guest}/index.html") != b"<h1>v2</h1>\n":
                assert time.monotonic() - start < 5, "host edit not in the guest within 5 s"
                time.sleep(0.05)
            print(f"host edit visible in the guest after {time.monotonic() - start:.2f} s "
                  "(including one ssh exec per poll)")

            assert chan.exec(f"echo from-guest > {guest}/written-in-guest").status == 0
            start = time.monotonic()
            while not (host / "written-in-guest").exists():
                assert time.monotonic() - start < 5, "guest write not on the host within 5 s"
                time.sleep(0.02)
            assert (host / "written-in-guest").read_text() == "from-guest\n"
            [status] = manager.status()
            assert status.state == "live" and status.error == "", status
        finally:
            manager.close()
    vm.cli("vm", "stop")
