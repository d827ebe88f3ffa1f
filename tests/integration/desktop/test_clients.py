"""docker-py and Testcontainers against a native pydeskd (passthrough mode); the vm tier runs
the same through the host API socket of the VM."""

from __future__ import annotations

import sys

from tests.support.desktop_scenario import run_testcontainers
from tests.support.pydeskd import Pydeskd


def test_docker_py_and_testcontainers(d: Pydeskd) -> None:
    client = d.client()
    try:
        assert client.containers.run("busybox", ["echo", "from docker-py"],
                                     remove=True) == b"from docker-py\n"
    finally:
        client.close()
    assert run_testcontainers(sys.executable, d.host, "busybox") == "served-by-testcontainers\n"
    assert d.docker("ps", "-aq").stdout == b""
