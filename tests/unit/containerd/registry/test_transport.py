"""Transport: redirects without cross-host Authorization, the retry policy, error mapping."""

from __future__ import annotations

import json

import pytest

from pydeskd.containerd.errors import (
    ContainerdError,
    InvalidArgument,
    NotFound,
    Unauthorized,
    Unavailable,
)
from pydeskd.containerd.registry.transport import (
    ConnectionFailed,
    Transport,
    raise_for_status,
)
from tests.unit.containerd.registry.fakes import FakeBackend, Request, Response


def transport(handler: object, **kw: object) -> tuple[Transport, FakeBackend, list[float]]:
    backend = FakeBackend(handler)  # type: ignore[arg-type]
    sleeps: list[float] = []
    return Transport(backend, sleep=sleeps.append, **kw), backend, sleeps  # type: ignore[arg-type]


def test_redirect_to_another_host_drops_authorization() -> None:
    def handler(req: Request) -> Response:
        if req.host == "reg.test":
            return Response(307, b"", {"Location": "https://storage.test/blob?sig=SECRET"})
        return Response(200, b"data")

    t, backend, _ = transport(handler)
    with t.request("GET", "https://reg.test/v2/a/blobs/x", {"Authorization": "Bearer tok",
                                                           "Accept": "*/*"}) as reply:
        assert reply.status == 200
        assert reply.url == "https://storage.test/blob?sig=SECRET"
    first, second = backend.requests
    assert first.header("Authorization") == "Bearer tok"
    assert second.header("Authorization") is None
    assert second.header("Accept") == "*/*"


def test_redirect_on_the_same_host_keeps_authorization() -> None:
    def handler(req: Request) -> Response:
        if req.path == "/v2/a/blobs/x":
            return Response(302, b"", {"Location": "/v2/a/blobs/y"})  # relative
        return Response(200, b"data")

    t, backend, _ = transport(handler)
    t.request("GET", "https://reg.test/v2/a/blobs/x", {"Authorization": "Bearer tok"}).close()
    assert [r.url for r in backend.requests] == ["https://reg.test/v2/a/blobs/x",
                                                "https://reg.test/v2/a/blobs/y"]
    assert backend.requests[1].header("Authorization") == "Bearer tok"


def test_scheme_change_counts_as_another_origin() -> None:
    def handler(req: Request) -> Response:
        if req.url.startswith("https://"):
            return Response(301, b"", {"Location": "http://reg.test/other"})
        return Response(200)

    t, backend, _ = transport(handler)
    t.request("GET", "https://reg.test/x", {"Authorization": "Bearer tok"}).close()
    assert backend.requests[1].header("Authorization") is None


def test_redirect_loop_is_an_error() -> None:
    t, _, _ = transport(lambda req: Response(302, b"", {"Location": "/again"}))
    with pytest.raises(InvalidArgument, match="redirects"):
        t.request("GET", "https://reg.test/x")


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried_with_backoff(status: int) -> None:
    answers = [Response(status), Response(status), Response(200, b"ok")]
    t, backend, sleeps = transport(lambda req: answers.pop(0), backoff=0.5)
    with t.request("GET", "https://reg.test/x") as reply:
        assert reply.status == 200
    assert len(backend.requests) == 3
    assert sleeps == [0.5, 1.0]


def test_retry_after_is_honoured_within_a_bound() -> None:
    answers = [Response(429, b"", {"Retry-After": "3"}), Response(429, b"", {"Retry-After": "999"}),
               Response(200)]
    t, _, sleeps = transport(lambda req: answers.pop(0), backoff=0.1)
    t.request("GET", "https://reg.test/x").close()
    assert sleeps == [3.0, 10.0]


def test_retries_are_bounded_and_the_last_status_is_returned() -> None:
    t, backend, _ = transport(lambda req: Response(503), max_attempts=3)
    reply = t.request("GET", "https://reg.test/x")
    assert reply.status == 503
    assert len(backend.requests) == 3
    with pytest.raises(Unavailable, match=r"GET https://reg.test/x: unexpected status 503"):
        raise_for_status(reply)


def test_connection_errors_retried_then_unavailable_naming_url_and_cause() -> None:
    t, backend, _ = transport(lambda req: ConnectionFailed("connection refused"),
                              max_attempts=4)
    with pytest.raises(Unavailable) as e:
        t.request("GET", "http://127.0.0.1:5000/v2/a/blobs/x?_state=SECRET")
    assert str(e.value) == "GET http://127.0.0.1:5000/v2/a/blobs/x: connection refused"
    assert len(backend.requests) == 4


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried(status: int) -> None:
    t, backend, _ = transport(lambda req: Response(status))
    t.request("GET", "https://reg.test/x").close()
    assert len(backend.requests) == 1


def test_retry_false_sends_once() -> None:
    t, backend, _ = transport(lambda req: Response(503))
    t.request("PATCH", "https://reg.test/x", body=b"chunk", retry=False).close()
    assert len(backend.requests) == 1


def _err(status: int, code: str, message: str = "m") -> Response:
    return Response(status, json.dumps({"errors": [{"code": code, "message": message}]}).encode())


@pytest.mark.parametrize(("response", "kind", "text"), [
    (_err(404, "MANIFEST_UNKNOWN", "manifest unknown"), NotFound,
     "manifest unknown: manifest unknown"),
    (_err(404, "BLOB_UNKNOWN", "blob unknown to registry"), NotFound,
     "blob unknown: blob unknown to registry"),
    (_err(404, "NAME_UNKNOWN", "repository name not known to registry"), NotFound,
     "name unknown: repository name not known to registry"),
    (Response(404), NotFound, "GET https://reg.test/x: not found"),
    (_err(401, "UNAUTHORIZED", "authentication required"), Unauthorized,
     "unauthorized: authentication required"),
    (_err(403, "DENIED", "requested access to the resource is denied"), Unauthorized,
     "denied: requested access to the resource is denied"),
    (Response(403), Unauthorized, "unexpected status 403"),
    (_err(400, "DIGEST_INVALID", "provided digest did not match"), InvalidArgument,
     "GET https://reg.test/x: digest invalid: provided digest did not match"),
    (_err(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown"), InvalidArgument,
     "manifest blob unknown: blob unknown"),
    (Response(500, b"<html>oops</html>"), Unavailable,
     "GET https://reg.test/x: unexpected status 500"),
    (_err(429, "TOOMANYREQUESTS", "slow down"), Unavailable, "toomanyrequests: slow down"),
])
def test_error_mapping(response: Response, kind: type[ContainerdError], text: str) -> None:
    t, _, _ = transport(lambda req: response, max_attempts=1)
    reply = t.request("GET", "https://reg.test/x?token=SECRET")
    with pytest.raises(kind) as e:
        raise_for_status(reply)
    assert type(e.value) is kind
    assert text in str(e.value)
    assert "SECRET" not in str(e.value)
    assert response.released
