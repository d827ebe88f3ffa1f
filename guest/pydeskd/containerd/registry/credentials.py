"""Registry credentials: ``~/.docker/config.json`` (``auths``, ``credsStore``, ``credHelpers``)
and the explicit credentials a request carries (the Engine API's ``X-Registry-Auth``).

What it is for: the auth layer asks ``CredentialSource.get(host)`` for the credentials of one
registry host and gets a ``Credentials`` (or ``None``: anonymous). Lookup follows the docker CLI:
a per-registry ``credHelpers`` entry wins, then ``credsStore``, then the inline ``auths`` entry;
Docker Hub is stored under ``https://index.docker.io/v1/``, other registries under ``host[:port]``
(with or without a scheme). Helpers (``docker-credential-<name> get``) run behind the
``HelperRunner`` seam.

What it must never do: put a secret in an exception message, a log line or a ``repr`` (the
``Credentials`` repr masks them), or run any program but ``docker-credential-<name>`` with a name
from the config file itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydeskd.containerd.errors import InvalidArgument, Unavailable
from pydeskd.containerd.reference import DEFAULT_REGISTRY_HOST

# The docker CLI's key for Docker Hub in config.json (its "IndexServer").
INDEX_SERVER = "https://index.docker.io/v1/"
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", DEFAULT_REGISTRY_HOST})
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A credential helper's way of saying "the secret is an identity token".
_TOKEN_USERNAME = "<token>"


@dataclass(frozen=True)
class Credentials:
    """What a client may present to one registry. Any field may be empty."""

    username: str = ""
    password: str = field(default="", repr=False)
    # An OAuth2 refresh token from ``docker login`` (sent to the token server, never the registry).
    identity_token: str = field(default="", repr=False)
    # A bearer token for the registry itself (``registrytoken`` of X-Registry-Auth).
    registry_token: str = field(default="", repr=False)
    # The registry these are for (``serveraddress``: ``https://index.docker.io/v1/``,
    # ``registry.example.com:5000``). Set, they are presented to that registry only (see
    # ``Explicit``); empty, to whichever registry the caller talks to.
    server_address: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    @staticmethod
    def from_registry_auth(header: str) -> Credentials:
        """Decode ``X-Registry-Auth`` (base64url JSON, as the docker CLI sends it).

        Raises InvalidArgument without echoing the header (it holds the secret).
        """
        text = header.strip()
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            obj = json.loads(raw) if raw.strip() else {}
        except (binascii.Error, ValueError):
            raise InvalidArgument("invalid X-Registry-Auth header: not base64 JSON") from None
        if not isinstance(obj, Mapping):
            raise InvalidArgument("invalid X-Registry-Auth header: not a JSON object")

        def text_of(key: str) -> str:
            value = obj.get(key) or ""
            return value if isinstance(value, str) else ""

        # As Docker's resolver does, credentials without a server address are Docker Hub's:
        # they must never reach a mirror or another registry.
        return Credentials(text_of("username"), text_of("password"),
                           text_of("identitytoken"), text_of("registrytoken"),
                           text_of("serveraddress") or INDEX_SERVER)


def registry_hostname(server_address: str) -> str:
    """The host a server address names (moby's ``ConvertToHostname``), Docker Hub's names folded
    into the host that serves it: ``https://index.docker.io/v1/`` -> ``registry-1.docker.io``,
    ``http://h:5000/x`` -> ``h:5000``."""
    host = server_address.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme):]
    host = host.split("/", 1)[0].lower()
    return DEFAULT_REGISTRY_HOST if host in _HUB_HOSTS else host


class CredentialSource(Protocol):
    def get(self, host: str) -> Credentials | None:
        """Credentials for registry ``host`` (``host[:port]``), or None for anonymous access."""
        ...


class Anonymous:
    """No credentials for anyone."""

    def get(self, host: str) -> Credentials | None:
        return None


class Explicit:
    """The credentials of one request (X-Registry-Auth) first, then ``fallback``'s.

    Credentials with a ``server_address`` are presented to that registry only (Docker Hub's
    names all mean ``registry-1.docker.io``): a pull of ``busybox`` through a mirror must not hand
    the user's Hub password to the mirror, nor a redirect or a second registry get it. Every
    other host gets ``fallback``'s answer.
    """

    def __init__(self, credentials: Credentials | None, fallback: CredentialSource | None = None):
        self._credentials = credentials
        self._fallback = fallback

    def get(self, host: str) -> Credentials | None:
        creds = self._credentials
        if creds is not None and not creds.empty and (
                not creds.server_address
                or registry_hostname(creds.server_address) == registry_hostname(host)):
            return creds
        return self._fallback.get(host) if self._fallback is not None else None


# (program, server URL) -> the helper's stdout; raises on failure. A seam for tests.
HelperRunner = Callable[[str, str], bytes]


class HelperNotFound(Exception):
    """The helper has no credentials for this server (its "credentials not found" answer)."""


def run_helper(program: str, server: str) -> bytes:
    """Run ``program get`` with ``server`` on stdin, as the docker CLI does."""
    try:
        proc = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                              timeout=30, check=False)
    except FileNotFoundError:
        raise Unavailable(f"credential helper {program} not found in PATH") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"credential helper {program} timed out") from None
    if proc.returncode != 0:
        # The helper protocol reports a missing entry on stdout with this exact text.
        if b"credentials not found" in proc.stdout + proc.stderr:
            raise HelperNotFound(server)
        # The helper's own output may echo what it was given; never pass it on.
        raise Unavailable(f"credential helper {program} failed (exit {proc.returncode})")
    return proc.stdout


def _server_keys(host: str) -> list[str]:
    """The config.json keys that may hold ``host``'s credentials, most specific first."""
    if host in _HUB_HOSTS:
        return [INDEX_SERVER, "index.docker.io", "docker.io", "https://index.docker.io",
                "registry-1.docker.io"]
    return [host, f"https://{host}", f"http://{host}"]


def _normalize_key(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000`` (the docker CLI's ConvertToHostname)."""
    stripped = key.removeprefix("http://").removeprefix("https://")
    return stripped.split("/", 1)[0].lower()


class DockerConfig:
    """Credentials from a docker CLI ``config.json`` (read at each ``get``: ``docker login`` may
    change it while the daemon runs).

    ``path`` defaults to ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.
    """

    def __init__(self, path: Path | None = None, runner: HelperRunner = run_helper) -> None:
        if path is None:
            base = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
            path = Path(base) / "config.json"
        self.path = path
        self._runner = runner

    def _load(self) -> Mapping[str, Any]:
        try:
            obj = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument(f"invalid docker config {self.path}: not JSON") from None
        if not isinstance(obj, Mapping):
            raise InvalidArgument(f"invalid docker config {self.path}: not a JSON object")
        return obj

    def get(self, host: str) -> Credentials | None:
        host = host.lower()
        config = self._load()
        helpers = config.get("credHelpers") or {}
        keys = _server_keys(host)
        if isinstance(helpers, Mapping):
            for key in keys:
                if isinstance(helpers.get(key), str):
                    return self._from_helper(helpers[key], key)
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            found = self._from_helper(store, keys[0])
            if found is not None:
                return found
        return self._from_auths(config.get("auths", {}), host, keys)

    def _from_helper(self, name: str, server: str) -> Credentials | None:
        if not _HELPER_NAME.fullmatch(name):
            raise InvalidArgument(f"invalid credential helper name {name!r} in {self.path}")
        try:
            out = self._runner(f"docker-credential-{name}", server)
        except HelperNotFound:
            return None
        try:
            obj = json.loads(out)
        except ValueError:
            raise Unavailable(f"credential helper {name}: unreadable answer") from None
        if not isinstance(obj, Mapping):
            raise Unavailable(f"credential helper {name}: unreadable answer")
        username, secret = str(obj.get("Username") or ""), str(obj.get("Secret") or "")
        if not username and not secret:
            return None
        if username == _TOKEN_USERNAME:
            return Credentials(identity_token=secret)
        return Credentials(username, secret)

    def _from_auths(self, auths: Any, host: str, keys: list[str]) -> Credentials | None:
        if not isinstance(auths, Mapping):
            raise InvalidArgument(f"invalid docker config {self.path}: auths is not an object")
        entry = next((auths[k] for k in keys if k in auths), None)
        if entry is None:
            wanted = {_normalize_key(k) for k in keys}
            entry = next((v for k, v in auths.items() if _normalize_key(k) in wanted), None)
        if not isinstance(entry, Mapping):
            return None
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            try:
                decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidArgument(
                    f"invalid docker config {self.path}: bad auth entry for {host}") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise InvalidArgument(
                    f"invalid docker config {self.path}: bad auth entry for {host}")
        creds = Credentials(username, password, str(entry.get("identitytoken") or ""),
                            str(entry.get("registrytoken") or ""))
        return None if creds.empty else creds
