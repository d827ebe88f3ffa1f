"""A Docker token server (the registry "Bearer" auth flow) on 127.0.0.1, for tests.

What it is for: a registry configured with ``auth: token`` answers 401 with
``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; the client asks this server for a
token (``GET realm?service=&scope=repository:NAME:pull,push`` with Basic credentials, or
anonymously; or ``POST realm`` with an OAuth2 form, as dockerd does) and retries with it. Tests
read what was asked (``requests``: account, scopes, what was granted) to check that a client
reuses its tokens and asks for the scopes it needs.

Tokens are JWTs signed RS256 by a fresh self-signed certificate, sent in the header's ``x5c``;
the registry trusts that certificate (``rootcertbundle = cert_path``). Signing shells out to
``openssl`` (no crypto dependency for a test helper). Grants: a known user gets every action it
asks for; an anonymous client gets ``pull`` if ``allow_anonymous_pull``, otherwise a token with
no access (as Docker Hub does: the registry then refuses with ``insufficient_scope``); wrong
credentials get 401 ``{"details": "incorrect username or password"}``.

What it must never do: listen on anything but 127.0.0.1, or outlive its context (``stop``
shuts the server and removes nothing it did not create).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

SERVICE = "pydesk-test-registry"
ISSUER = "pydesk-test-token-server"


@dataclass(frozen=True)
class TokenRequest:
    """One request to the realm, as the server saw it."""

    method: str  # GET or POST
    account: str | None  # the authenticated user; None for an anonymous request
    service: str
    scopes: tuple[str, ...]  # as sent, e.g. "repository:test/single:pull"
    granted: tuple[str, ...]  # what the token allows, in scope syntax
    status: int  # 200, or 401 for bad credentials


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


class TokenServer:
    """Start with ``with TokenServer(dir, {"user": "password"}) as ts:``; ``ts.realm``."""

    def __init__(self, workdir: Path, users: Mapping[str, str] | None = None, *,
                 allow_anonymous_pull: bool = False, service: str = SERVICE,
                 issuer: str = ISSUER, expires_in: int = 300) -> None:
        self.workdir = workdir
        self.users = dict(users or {})
        self.allow_anonymous_pull = allow_anonymous_pull  # tests may flip it
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.cert_path = workdir / "token-cert.pem"
        self.key_path = workdir / "token-key.pem"
        self.requests: list[TokenRequest] = []
        self._refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._x5c = ""

    # -- lifecycle

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                        "-days", "2", "-subj", "/CN=pydesk test token issuer",
                        "-keyout", str(self.key_path), "-out", str(self.cert_path)],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert_path), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="token-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token server not started")
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    # -- what tests read

    @property
    def token_requests(self) -> int:
        """How many tokens were asked for (successfully or not)."""
        with self._lock:
            return len(self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- tokens

    def _grant(self, account: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            parsed = _parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            if account is None:
                actions = [a for a in actions if a == "pull"] if self.allow_anonymous_pull \
                    else []
            if actions:
                access.append({"type": kind, "name": name, "actions": actions})
        return access

    def issue(self, account: str | None, scopes: list[str]) -> tuple[str, list[dict[str, Any]]]:
        """A signed token for ``account`` (None: anonymous) and the access it grants."""
        now = int(time.time())
        access = self._grant(account, scopes)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": account or "", "aud": self.service,
                  "exp": now + self.expires_in, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(16), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key_path)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return signing_input + "." + _b64url(signature), access

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _granted_scopes(access: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access)


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read `requests`

        def _send(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="pydesk test token server"')
            self.end_headers()
            self.wfile.write(data)

        def _basic(self) -> tuple[str, str] | None:
            header = self.headers.get("Authorization", "")
            if not header.lower().startswith("basic "):
                return None
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return ("", "")
            return user, password

        def _respond(self, method: str, account: str | None, bad: bool, *, service: str,
                     scopes: list[str], refresh: bool) -> None:
            if bad:
                server._record(TokenRequest(method, account, service, tuple(scopes), (), 401))
                self._send(401, {"details": "incorrect username or password"})
                return
            token, access = server.issue(account, scopes)
            server._record(TokenRequest(method, account, service, tuple(scopes),
                                        _granted_scopes(access), 200))
            body: dict[str, Any] = {
                "token": token, "access_token": token, "expires_in": server.expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if refresh and account is not None:
                refresh_token = secrets.token_hex(16)
                with server._lock:
                    server._refresh_tokens[refresh_token] = account
                body["refresh_token"] = refresh_token
            self._send(200, body)

        def _scopes(self, query: Mapping[str, list[str]]) -> list[str]:
            return [s for value in query.get("scope", []) for s in value.split(" ") if s]

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/token":
                self._send(404, {"details": "not found"})
                return
            query = parse_qs(url.query)
            creds = self._basic()
            bad = creds is not None and server.users.get(creds[0]) != creds[1]
            self._respond("GET", creds[0] if creds is not None else None, bad,
                          service=query.get("service", [""])[0], scopes=self._scopes(query),
                          refresh=query.get("offline_token", [""])[0] == "true")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            grant = form.get("grant_type", [""])[0]
            account: str | None = None
            bad = False
            if grant == "password":
                account = form.get("username", [""])[0]
                bad = server.users.get(account) != form.get("password", [""])[0]
            elif grant == "refresh_token":
                with server._lock:
                    account = server._refresh_tokens.get(form.get("refresh_token", [""])[0])
                bad = account is None
            else:
                bad = True
            self._respond("POST", account, bad, service=form.get("service", [""])[0],
                          scopes=self._scopes(form),
                          refresh=form.get("access_type", [""])[0] == "offline")

    return Handler
