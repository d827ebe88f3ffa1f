"""Registry authentication: ``WWW-Authenticate`` challenges, Basic, and Bearer tokens.

What it is for: the client sends a request anonymously (or with what it already holds for that
host), and on ``401`` hands the challenge to ``Authorizer.challenge``, which answers with the
``Authorization`` header to retry with. This is the Docker Hub flow of the distribution spec
(token.md, oauth.md) as Docker implements it:

- ``Basic``: the registry wants the user's credentials on every request;
- ``Bearer realm=... service=... scope=...``: a token server issues a token for a set of scopes
  (``repository:NAME:pull``, ``repository:NAME:pull,push``); a GET with Basic credentials (or
  none, for anonymous pulls), or an OAuth2 POST with the identity (refresh) token ``docker
  login`` stored. Tokens are cached per (registry host, scope set) and reused until their
  ``expires_in`` (60 s when absent or smaller, as Docker) runs out on the injected clock.

Once a host has challenged, later requests to it carry authorization up front (no 401 per scope).

What it must never do: send credentials to a host that did not ask for them (the transport keeps
redirects from carrying them further), put a secret or a token in an error message, or loop on a
registry that keeps refusing (one challenge per request, then a clear ``Unauthorized``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pydeskd.containerd.errors import InvalidArgument, Unauthorized
from pydeskd.containerd.registry.credentials import Credentials, CredentialSource
from pydeskd.containerd.registry.transport import (
    Transport,
    raise_for_status,
    safe_url,
)

DEFAULT_EXPIRES_IN = 60
CLIENT_ID = "pydesk"
INCORRECT_CREDENTIALS = "unauthorized: incorrect username or password"
_MAX_TOKEN_RESPONSE = 1 << 20


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge; ``scheme`` and parameter names are lower case."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


_SEPARATORS = set('()<>@,;:\\"/[]?={} \t')


def _token_end(text: str, i: int) -> int:
    while i < len(text) and text[i] not in _SEPARATORS:
        i += 1
    return i


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The quoted-string starting at ``text[i] == '"'``; returns (value, index after it)."""
    out, i = [], i + 1
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), i + 1


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235), several challenges included.

    ``Bearer realm="https://a/token",service="r",scope="repository:x:pull", Basic realm="b"``
    gives two challenges. Unparseable trailing text is ignored rather than failing the request.
    """
    challenges: list[Challenge] = []
    i = 0
    while i < len(header):
        i = _skip_space(header, i)
        while i < len(header) and header[i] in ", ":
            i += 1
        end = _token_end(header, i)
        if end == i:
            break
        scheme, i = header[i:end].lower(), end
        params: dict[str, str] = {}
        while True:
            i = _skip_space(header, i)
            while i < len(header) and header[i] in ", ":
                i += 1
            end = _token_end(header, i)
            j = _skip_space(header, end)
            if end == i or j >= len(header) or header[j] != "=":
                # Not "name=": the end, or the next challenge's scheme (or a token68, unused by
                # registries): this challenge's parameters are over.
                break
            name = header[i:end].lower()
            j = _skip_space(header, j + 1)
            if j < len(header) and header[j] == '"':
                value, i = _quoted(header, j)
            else:
                # Lenient: an unquoted realm URL holds ":" and "/", which a strict token
                # would not; it ends at a comma or a space.
                k = j
                while k < len(header) and header[k] not in ", \t":
                    k += 1
                value, i = header[j:k], k
            params[name] = value
        challenges.append(Challenge(scheme, params))
    return challenges


def repository_scope(repository: str, *actions: str) -> str:
    """``repository:library/busybox:pull,push`` (the token spec's resource scope)."""
    return f"repository:{repository}:{','.join(actions)}"


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """One canonical spelling per scope set, the token cache's key: the actions of one resource
    merged and sorted (``repository:a:push`` + ``repository:a:pull`` ->
    ``repository:a:pull,push``), so a registry's challenge and the client's own scopes agree."""
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        for part in scope.split(" "):
            resource, sep, actions = part.rpartition(":")
            if not part:
                continue
            if not sep or ":" not in resource:  # not type:name:actions; keep as is
                merged.setdefault(part, set())
                continue
            merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" if a else r for r, a in merged.items()))


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass
class _Token:
    value: str
    expires_at: float


class Authorizer:
    """Holds each host's last challenge and the token cache; thread-safe.

    ``clock`` (monotonic seconds) is injectable so expiry is tested without waiting.
    """

    def __init__(self, transport: Transport, credentials: CredentialSource,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._transport = transport
        self._credentials = credentials
        self.clock = clock
        self._lock = threading.Lock()
        # Serializes token fetches, so threads needing the same token fetch it once.
        self._fetch_lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        # Asked once per host: a credential helper is a subprocess, config.json a file read.
        self._credentials_by_host: dict[str, Credentials] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}

    def credentials(self, host: str) -> Credentials:
        """``host``'s credentials (empty for anonymous), looked up once per Authorizer."""
        with self._lock:
            found = self._credentials_by_host.get(host)
        if found is None:
            found = self._credentials.get(host) or Credentials()
            with self._lock:
                self._credentials_by_host[host] = found
        return found

    def authorization(self, host: str, scopes: Iterable[str], denied: str) -> str | None:
        """The header to send up front, if ``host`` has challenged before; else None."""
        with self._lock:
            challenge = self._challenges.get(host)
        if challenge is None:
            return None
        return self._answer(host, challenge, normalize_scopes(scopes), denied, force=False)

    def challenge(self, host: str, scopes: Iterable[str], header: str, sent: str | None,
                  denied: str) -> str:
        """Answer a 401 that carried ``header``; ``sent`` is the Authorization that was refused.

        ``denied`` is the message for a refusal without credentials (Docker's "pull access
        denied for NAME, ..."). Raises Unauthorized when there is nothing better to send.
        """
        parsed = parse_challenges(header)
        chosen = next((c for c in parsed if c.scheme == "bearer"), None) \
            or next((c for c in parsed if c.scheme == "basic"), None)
        if chosen is None:
            raise Unauthorized(denied)
        with self._lock:
            self._challenges[host] = chosen
        wanted = list(scopes)
        if chosen.scheme == "bearer" and chosen.params.get("scope"):
            wanted.append(chosen.params["scope"])
        key = normalize_scopes(wanted)
        if sent is not None and sent.startswith("Bearer "):
            with self._lock:
                cached = self._tokens.get((host, key))
                if cached is not None and "Bearer " + cached.value == sent:
                    del self._tokens[(host, key)]
        answer = self._answer(host, chosen, key, denied, force=sent is not None)
        if answer == sent:
            raise Unauthorized(INCORRECT_CREDENTIALS if not self.credentials(host).empty
                               else denied)
        return answer

    def _answer(self, host: str, challenge: Challenge, scopes: tuple[str, ...], denied: str,
                force: bool) -> str:
        creds = self.credentials(host)
        if challenge.scheme == "basic":
            if not (creds.username or creds.password):
                raise Unauthorized(denied)
            return _basic(creds.username, creds.password)
        if creds.registry_token:
            return "Bearer " + creds.registry_token
        with self._fetch_lock:
            now = self.clock()
            with self._lock:
                cached = self._tokens.get((host, scopes))
            if cached is not None and cached.expires_at > now and not force:
                return "Bearer " + cached.value
            token, expires_in = self._fetch_token(challenge, scopes, creds, denied)
            with self._lock:
                self._tokens[(host, scopes)] = _Token(token, now + expires_in)
        return "Bearer " + token

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...], creds: Credentials,
                     denied: str) -> tuple[str, float]:
        realm = challenge.params.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"registry token realm {realm!r} is not an http(s) URL")
        service = challenge.params.get("service", "")
        if creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": CLIENT_ID, "scope": " ".join(scopes)}
            if service:
                form["service"] = service
            reply = self._transport.request(
                "POST", realm, {"Content-Type": "application/x-www-form-urlencoded"},
                urllib.parse.urlencode(form).encode())
        else:
            query = [("service", service)] if service else []
            query += [("scope", s) for s in scopes]
            headers = {}
            if creds.username or creds.password:
                headers["Authorization"] = _basic(creds.username, creds.password)
            sep = "&" if parts.query else "?"
            url = realm + (sep + urllib.parse.urlencode(query) if query else "")
            reply = self._transport.request("GET", url, headers)
        if reply.status in (401, 403):
            reply.close()
            has_creds = bool(creds.username or creds.password or creds.identity_token)
            raise Unauthorized(INCORRECT_CREDENTIALS if has_creds else denied)
        raise_for_status(reply)
        with reply:
            body = reply.read(_MAX_TOKEN_RESPONSE)
        try:
            doc = json.loads(body)
        except ValueError:
            raise InvalidArgument(f"token server {safe_url(realm)}: answer is not JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise InvalidArgument(f"token server {safe_url(realm)}: answer has no token")
        expires_in = doc.get("expires_in")
        if not isinstance(expires_in, int | float) or expires_in < DEFAULT_EXPIRES_IN:
            expires_in = DEFAULT_EXPIRES_IN
        return token, float(expires_in)


__all__ = [
    "INCORRECT_CREDENTIALS",
    "Authorizer",
    "Challenge",
    "parse_challenges",
    "repository_scope",
]
