"""Fixtures for the API proxy against a real pydeskd: the docker CLI and docker-py talk to the
proxy's socket, the proxy relays to the daemon through a unix-socket opener (what the VM's SSH
channel does in production). One registry mirror per session, one daemon and one proxy per
module; each test's containers are removed after it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import pytest

from pydesk.proxy import ApiProxy, BindResolver, unix_opener
from tests.support.image_fixtures import busybox_mirror  # noqa: F401 -- a fixture
from tests.support.pydeskd import DOCKER, Pydeskd, PydeskdError
from tests.support.registry import Registry

BUSYBOX = "busybox:latest"


class Proxied:
    """The docker CLI / docker-py through a proxy in front of ``daemon``."""

    def __init__(self, daemon: Pydeskd, socket_path: Path) -> None:
        self.daemon = daemon
        self.socket_path = socket_path
        self.host = f"unix://{socket_path}"
        self._clients: list[Any] = []

    def env(self) -> dict[str, str]:
        env = self.daemon.env()
        env["DOCKER_HOST"] = self.host
        return env

    def docker(self, *args: str, input: bytes | None = None, check: bool = True,
               timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([DOCKER, *args], input=input, capture_output=True,
                              env=self.env(), timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise PydeskdError(f"docker {' '.join(args)} via the proxy failed "
                               f"({done.returncode}): {done.stderr.decode().strip()}\n"
                               f"--- pydeskd log:\n{self.daemon.log_tail()}")
        return done

    def out(self, *args: str, timeout: float = 60) -> str:
        return self.docker(*args, timeout=timeout).stdout.decode().strip()

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([DOCKER, *args], env=self.env(), **kwargs)

    def client(self) -> Any:
        client = docker.DockerClient(base_url=self.host, timeout=60)
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


@pytest.fixture(scope="module")
def daemon(busybox_mirror: Registry) -> Iterator[Pydeskd]:
    base = Path(tempfile.mkdtemp(prefix="pd-proxy-", dir="/tmp"))
    with Pydeskd(base, config={"registry-mirrors": [busybox_mirror.url]}) as d:
        d.docker("pull", "-q", BUSYBOX)
        yield d
    shutil.rmtree(base, ignore_errors=True)


def start_proxy(daemon: Pydeskd, directory: Path,
                resolver: BindResolver | None = None) -> ApiProxy:
    return ApiProxy(directory / "run" / "docker.sock", unix_opener(str(daemon.socket)),
                    resolver).start()


@pytest.fixture(scope="module")
def proxy(daemon: Pydeskd) -> Iterator[ApiProxy]:
    directory = Path(tempfile.mkdtemp(prefix="pd-px-", dir="/tmp"))
    server = start_proxy(daemon, directory)
    yield server
    server.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def p(daemon: Pydeskd, proxy: ApiProxy) -> Iterator[Proxied]:
    proxied = Proxied(daemon, proxy.socket_path)
    yield proxied
    proxied.close_clients()
    daemon.remove_containers()


def dir_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
