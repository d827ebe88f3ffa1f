"""Fakes for the registry client's unit tests: a scripted HTTP backend and an in-memory registry.

Stand-ins for what the unit tier cannot run (a registry, a token server, a storage host behind a
redirect); the real seam (urllib3 against Debian's docker-registry) is exercised by
tests/integration/registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from urllib3 import HTTPHeaderDict

from pydeskd.containerd.registry.transport import ConnectionFailed


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.url).path

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query)

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    # Break the connection after this many body bytes (a registry dying mid-download).
    fail_after: int | None = None

    def __post_init__(self) -> None:
        self._headers = HTTPHeaderDict(dict(self.headers))
        self.released = False

    @property
    def status_code(self) -> int:
        return self.status

    def stream(self, amt: int) -> Iterator[bytes]:
        limit = len(self.body) if self.fail_after is None else self.fail_after
        for i in range(0, limit, amt):
            yield self.body[i : min(i + amt, limit)]
        if self.fail_after is not None:
            raise ConnectionFailed("connection reset by peer")

    def release(self) -> None:
        self.released = True


class _RawView:
    """Adapts Response to the RawResponse protocol (headers as a case-insensitive mapping)."""

    def __init__(self, response: Response) -> None:
        self._r = response
        self.status = response.status
        self.headers = response._headers

    def stream(self, amt: int) -> Iterator[bytes]:
        return self._r.stream(amt)

    def release(self) -> None:
        self._r.release()


Handler = Callable[[Request], "Response | Exception"]


class FakeBackend:
    """A thread-safe scripted backend: each request goes to ``handler``; all are recorded."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float) -> _RawView:
        req = Request(method, url, dict(headers), body)
        with self._lock:
            self.requests.append(req)
        answer = self.handler(req)
        if isinstance(answer, Exception):
            raise answer
        return _RawView(answer)

    def matching(self, method: str, path_part: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and path_part in r.url]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return Response(status, body, {"Content-Type": "application/json"})


class FakeRegistry:
    """An in-memory distribution registry at ``http://reg.test`` (handler for FakeBackend).

    Auth modes: "none", "basic" (user/secret), "token" (a token server at auth.test issuing
    tokens for user/secret or anonymous). Knobs: ``ignore_range``, ``fail_blob_after`` (break a
    blob download after N bytes, once per entry), ``redirect_blobs`` (to storage.test),
    ``head_digest`` (send Docker-Content-Digest on HEAD), ``mount_allowed``.
    """

    def __init__(self, auth: str = "none", host: str = "reg.test") -> None:
        self.host = host
        self.auth = auth
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.uploads: dict[str, tuple[str, bytearray]] = {}
        self.ignore_range = False
        self.fail_blob_after: list[int] = []
        self.redirect_blobs = False
        self.head_digest = True
        self.mount_allowed = True
        # Per PATCH: "lost" (chunk taken, answer lost), "dropped" (nothing taken), "503", "ok".
        self.patch_faults: list[str] = []
        self.token_hits = 0
        self.expires_in = 300
        self.issued: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    # content helpers
    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        self.blobs[(repo, digest)] = data
        return digest

    def put_manifest(self, repo: str, tag: str, media_type: str, data: bytes) -> str:
        digest = sha(data)
        self.manifests[(repo, tag)] = (media_type, data)
        self.manifests[(repo, digest)] = (media_type, data)
        return digest

    # auth
    def _authorized(self, req: Request, repo: str, action: str) -> Response | None:
        header = req.header("Authorization") or ""
        if self.auth == "none":
            return None
        if self.auth == "basic":
            good = "Basic " + base64.b64encode(b"user:secret").decode()
            if header == good:
                return None
            return Response(401, b"", {"WWW-Authenticate": 'Basic realm="fake"'})
        token = header.removeprefix("Bearer ")
        scope = f"repository:{repo}:{action}"
        granted = self.issued.get(token, set())
        if any(s.startswith(f"repository:{repo}:") and action in s.split(":")[-1].split(",")
               for s in granted):
            return None
        return Response(401, json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "x"}]})
                        .encode(), {"WWW-Authenticate":
                                    f'Bearer realm="http://auth.test/token",service="fake",'
                                    f'scope="{scope}"'})

    def _token(self, req: Request) -> Response:
        with self._lock:
            self.token_hits += 1
        header = req.header("Authorization")
        if req.method == "POST":
            form = urllib.parse.parse_qs((req.body or b"").decode())
            if form.get("refresh_token") != ["refresh-me"]:
                return Response(401, b"{}")
            scopes = set(form.get("scope", [""])[0].split(" "))
            key = "access_token"
        else:
            if header is not None and header != "Basic " + base64.b64encode(
                    b"user:secret").decode():
                return Response(401, b'{"details":"incorrect username or password"}')
            scopes = set(req.query.get("scope", []))
            key = "token"
            if header is None:  # anonymous: pull only
                scopes = {s.replace(",push", "").replace(":push", ":") for s in scopes}
        token = uuid.uuid4().hex
        self.issued[token] = scopes
        return Response(200, json.dumps({key: token, "expires_in": self.expires_in}).encode())

    def __call__(self, req: Request) -> Response | Exception:
        if req.host == "auth.test":
            return self._token(req)
        if req.host == "storage.test":
            data = self.blobs.get(tuple(req.query["k"][0].split("|", 1)))  # type: ignore[arg-type]
            return Response(200, data) if data is not None else Response(404)
        if req.host != self.host:
            return ConnectionFailed("connection refused")
        parts = req.path.split("/")
        if req.path == "/v2/":
            return self._authorized(req, "", "pull") or Response(200, b"{}")
        # /v2/<repo...>/{manifests,blobs}/<ref> or /v2/<repo...>/blobs/uploads/[id]
        if "uploads" in parts:
            i = parts.index("uploads")
            return self._upload(req, "/".join(parts[2 : i - 1]), parts[i + 1 :])
        kind, ref = parts[-2], parts[-1]
        repo = "/".join(parts[2:-2])
        action = "pull" if req.method in ("GET", "HEAD") else "push"
        denied = self._authorized(req, repo, action)
        if denied is not None:
            return denied
        if kind == "manifests":
            return self._manifest(req, repo, ref)
        return self._blob(req, repo, ref)

    def _manifest(self, req: Request, repo: str, ref: str) -> Response:
        if req.method == "PUT":
            assert req.body is not None
            digest = self.put_manifest(repo, ref, req.header("Content-Type") or "", req.body)
            return Response(201, b"", {"Docker-Content-Digest": digest})
        found = self.manifests.get((repo, ref))
        if found is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        media_type, data = found
        headers = {"Content-Type": media_type, "Content-Length": str(len(data))}
        if self.head_digest:
            headers["Docker-Content-Digest"] = sha(data)
        return Response(200, b"" if req.method == "HEAD" else data, headers)

    def _blob(self, req: Request, repo: str, digest: str) -> Response:
        data = self.blobs.get((repo, digest))
        if data is None:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if req.method == "HEAD":
            return Response(200, b"", {"Content-Length": str(len(data))})
        if self.redirect_blobs:
            key = urllib.parse.quote(f"{repo}|{digest}")
            return Response(307, b"", {"Location": f"http://storage.test/b?k={key}"})
        fail = self.fail_blob_after.pop(0) if self.fail_blob_after else None
        rng = req.header("Range")
        if rng and not self.ignore_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            part = data[start:]
            return Response(206, part, {"Content-Range": f"bytes {start}-{len(data) - 1}/"
                                                         f"{len(data)}"}, fail)
        return Response(200, data, {"Content-Length": str(len(data))}, fail)

    def _upload(self, req: Request, repo: str, rest: list[str]) -> Response | Exception:
        denied = self._authorized(req, repo, "push")
        if denied is not None:
            return denied
        if req.method == "POST":
            mount, source = req.query.get("mount"), req.query.get("from")
            if mount and source and self.mount_allowed \
                    and (source[0], mount[0]) in self.blobs:
                self.blobs[(repo, mount[0])] = self.blobs[(source[0], mount[0])]
                return Response(201, b"", {"Location": f"/v2/{repo}/blobs/{mount[0]}"})
            upload = uuid.uuid4().hex
            self.uploads[upload] = (repo, bytearray())
            # Relative Location, with state in the query, as docker-registry sends it.
            return Response(202, b"", {"Location": f"/v2/{repo}/blobs/uploads/{upload}?_state=s0",
                                       "Docker-Upload-UUID": upload})
        upload = rest[0]
        if upload not in self.uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
        _, buf = self.uploads[upload]
        if req.method == "GET":
            end = len(buf) - 1 if buf else 0
            return Response(204, b"", {
                "Location": f"/v2/{repo}/blobs/uploads/{upload}?_state=g{len(buf)}",
                "Range": f"0-{end}"})
        if req.method == "PATCH":
            fault = self.patch_faults.pop(0) if self.patch_faults else "ok"
            if fault == "dropped":
                return ConnectionFailed("connection reset by peer")
            if fault == "503":
                return Response(503)
            rng = req.header("Content-Range") or ""
            start = int(rng.split("-")[0])
            if start != len(buf):
                return Response(416)
            buf += req.body or b""
            if fault == "lost":
                return ConnectionFailed("connection reset by peer")
            # Absolute Location this time: clients must handle both.
            return Response(202, b"", {
                "Location": f"http://{self.host}/v2/{repo}/blobs/uploads/{upload}?_state=s{len(buf)}",
                "Range": f"0-{len(buf) - 1}"})
        if req.method == "PUT":
            buf += req.body or b""
            digest = req.query["digest"][0]
            if sha(bytes(buf)) != digest:
                return _error(400, "DIGEST_INVALID",
                              "provided digest did not match uploaded content")
            self.blobs[(repo, digest)] = bytes(buf)
            del self.uploads[upload]
            return Response(201, b"", {"Docker-Content-Digest": digest,
                                       "Location": f"/v2/{repo}/blobs/{digest}"})
        return Response(405)
