"""pydeskd on a host whose only firewall tool is ``nft`` (its PATH has no iptables): the probe
picks the nftables backend, and published ports (127.0.0.1, the host's address), outbound NAT
and ``--internal`` work through pydesk's own nft table, which goes with the daemon. Root."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.network.driver import Names
from pydeskd.network.nft import table_name
from tests.integration.network.conftest import BUSYBOX, curl, daemon_root, free_port, out, unique
from tests.integration.network.outside import Outside
from tests.integration.network.test_acceptance import eventually, fetch, host_address, httpd
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(busybox_mirror: Registry) -> Iterator[Pydeskd]:
    base = Path(tempfile.mkdtemp(prefix="pd-net-nft-", dir="/tmp"))
    tools = base / "bin"
    tools.mkdir()
    nft = shutil.which("nft")
    assert nft is not None
    (tools / "nft").symlink_to(nft)
    saved = os.environ["PATH"]
    # Everything the daemon needs, without the sbin directories that hold iptables; only the
    # daemon's start sees this PATH (it keeps it; the tests' own commands do not).
    venv = Path(__file__).resolve().parents[3] / ".venv" / "bin"
    os.environ["PATH"] = f"{tools}:{venv}:/usr/local/bin:/usr/bin:/bin"
    d = Pydeskd(base, config={"registry-mirrors": [busybox_mirror.url]})
    try:
        d.start()
    finally:
        os.environ["PATH"] = saved
    daemon_root(d)
    try:
        d.docker("pull", "-q", BUSYBOX)
        yield d
    finally:
        d.stop()
    shutil.rmtree(base, ignore_errors=True)


def _table(d: Pydeskd) -> str:
    name = table_name(Names.for_daemon(d.data_root, d.exec_root).chain_prefix)
    done = subprocess.run(["nft", "list", "table", "ip", name], capture_output=True, text=True,
                          check=False)
    return done.stdout if done.returncode == 0 else ""


def test_nft_backend_end_to_end(d: Pydeskd) -> None:
    assert "masquerade" in _table(d)
    iptables = subprocess.run(["iptables-save"], capture_output=True, text=True,
                              check=True).stdout
    assert Names.for_daemon(d.data_root, d.exec_root).chain_prefix not in iptables
    port = free_port()
    name = unique("nft")
    httpd(d, name, "-p", f"{port}:80")
    for url in (f"http://127.0.0.1:{port}/", f"http://{host_address()}:{port}/"):
        assert f"hello from {name}" in eventually(lambda url=url: curl(url))  # type: ignore[misc]
    assert f"dport {port} dnat to" in _table(d)
    with Outside(f"10.{190 + os.getpid() % 10}.{os.getpid() % 250}.0/24", free_port()) as o:
        page = fetch(d, target=o.server_ip, port=o.port, path="/index.html")
        assert page.endswith("outside says hi\n")
        internal = unique("int")
        out(d, "network", "create", "--internal", internal)
        assert fetch(d, "--network", internal, target=o.server_ip, port=o.port) == ""
