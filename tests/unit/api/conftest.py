"""Fixtures for the API unit tests: a real Daemon over temporary roots, its app, a TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pydeskd.api.app import create_app
from pydeskd.daemon.config import DaemonConfig
from pydeskd.daemon.daemon import Daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    config = DaemonConfig(data_root=tmp_path / "data", exec_root=tmp_path / "exec",
                          registry_mirrors=("http://127.0.0.1:5999",),
                          insecure_registries=("10.1.0.0/16", "reg.local:5000"))
    d = Daemon.create(config)
    yield d
    d.close()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[TestClient]:
    # Only the system routes: these tests must not depend on other route modules.
    app = create_app(daemon, modules=("pydeskd.api.routes.system",))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
