"""Docker's error replies: the containerd kinds mapped in one place, 400 instead of 422."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from pydeskd.api import errors
from pydeskd.api.app import VersionPrefix
from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotModified,
    Unauthorized,
    Unavailable,
)

KINDS: list[tuple[type[Exception], int]] = [
    (NotFound, 404), (AlreadyExists, 409), (FailedPrecondition, 409), (InvalidArgument, 400),
    (Unauthorized, 401), (Unavailable, 503), (NotModified, 304), (RuntimeError, 500),
    (KeyError, 500),
]


@pytest.mark.parametrize(("kind", "status"), KINDS)
def test_status_for(kind: type[Exception], status: int) -> None:
    assert errors.status_for(kind("x")) == status


class Spec(BaseModel):
    Image: str
    Tty: bool = False
    Memory: int = 0


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = FastAPI()
    errors.install(app)

    @app.get("/raise/{index}")
    def raise_kind(index: int) -> None:
        raise KINDS[index][0](f"failure {index}")

    @app.post("/create")
    def create(spec: Spec) -> dict[str, object]:
        return {"Image": spec.Image, "Tty": spec.Tty}

    with TestClient(VersionPrefix(app), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("index", range(len(KINDS)))
def test_errors_over_http(client: TestClient, index: int) -> None:
    kind, status = KINDS[index]
    got = client.get(f"/v1.45/raise/{index}")
    assert got.status_code == status
    if status == 304:
        assert got.content == b""
    else:
        assert got.json() == {"message": str(kind(f"failure {index}"))}


def test_validation_errors_are_400_with_a_message(client: TestClient) -> None:
    wrong_type = client.post("/create", json={"Image": "busybox", "Memory": "lots"})
    assert wrong_type.status_code == 400
    assert "Memory" in wrong_type.json()["message"]
    missing = client.post("/create", json={"Tty": True})
    assert missing.status_code == 400 and "Image" in missing.json()["message"]
    malformed = client.post("/create", content=b'{"Image": ',
                            headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert "JSON" in malformed.json()["message"]


def test_unknown_fields_are_ignored(client: TestClient) -> None:
    got = client.post("/create", json={"Image": "busybox", "Tty": True, "Frobnicate": 1})
    assert got.status_code == 200 and got.json() == {"Image": "busybox", "Tty": True}
