"""``POST /auth`` (``docker login``): check credentials against a registry, as dockerd does.

What it is for: the docker CLI asks the daemon whether a username and password (or an identity
token) open a registry before it stores them in its own config. Like moby's ``loginV2``, this
sends ``GET /v2/`` to the registry (never a mirror), answers its challenge with the given
credentials through the registry client's ``Authorizer`` (Basic, or a Bearer token from the
token server; no repository scope), and asks again: a 200 is "Login Succeeded"; a refusal is
``Unauthorized`` with Docker's message (``login attempt to http://host/v2/ failed with status:
401 Unauthorized`` for a Basic registry). A registry that asks for nothing accepts any login.

What it must never do: keep the credentials (the CLI stores them; the daemon forgets them), put
one in a message or a log line, or send them to a host other than the registry and the token
realm it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydeskd.containerd.errors import InvalidArgument, Unauthorized
from pydeskd.containerd.reference import DEFAULT_DOMAIN
from pydeskd.containerd.registry import Credentials
from pydeskd.containerd.registry.auth import INCORRECT_CREDENTIALS
from pydeskd.containerd.registry.credentials import INDEX_SERVER
from pydeskd.containerd.registry.transport import raise_for_status
from pydeskd.containerd.service import ImageService

LOGIN_SUCCEEDED = "Login Succeeded"
_HUB_ADDRESSES = frozenset({"", "docker.io", "index.docker.io", "registry-1.docker.io",
                            "https://index.docker.io/v1/", "https://index.docker.io/v1",
                            "https://index.docker.io", "https://registry-1.docker.io"})


@dataclass(frozen=True)
class AuthConfig:
    """The body of ``POST /auth`` (the docker CLI's ``registry.AuthConfig``)."""

    username: str = ""
    password: str = field(default="", repr=False)
    server_address: str = ""
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    @staticmethod
    def from_json(obj: Any) -> AuthConfig:
        """Raises InvalidArgument for a body that is not an object of strings."""
        if not isinstance(obj, Mapping):
            raise InvalidArgument("invalid auth configuration: not a JSON object")

        def text(key: str) -> str:
            value = obj.get(key)
            if value is None:
                return ""
            if not isinstance(value, str):
                raise InvalidArgument(f"invalid auth configuration: {key} must be a string")
            return value

        return AuthConfig(text("username"), text("password"), text("serveraddress"),
                          text("identitytoken"), text("registrytoken"))

    @property
    def credentials(self) -> Credentials:
        # Bound to the registry being logged in to (Docker Hub when no address is given).
        return Credentials(self.username, self.password, self.identity_token,
                           self.registry_token, self.server_address or INDEX_SERVER)


def registry_domain(server_address: str) -> str:
    """``https://index.docker.io/v1/`` (and friends) -> ``docker.io``; ``http://h:5000/x`` ->
    ``h:5000``. Raises InvalidArgument."""
    address = server_address.strip()
    if address.lower() in _HUB_ADDRESSES:
        return DEFAULT_DOMAIN
    host = address.removeprefix("http://").removeprefix("https://").split("/", 1)[0].lower()
    if not host or any(c in host for c in " @?#"):
        raise InvalidArgument(f"invalid registry address {server_address!r}")
    return DEFAULT_DOMAIN if host in _HUB_ADDRESSES else host


def login(svc: ImageService, config: AuthConfig) -> dict[str, str]:
    """Check ``config`` against its registry; return the ``/auth`` answer.

    Raises Unauthorized (refused), Unavailable (unreachable), InvalidArgument.
    """
    domain = registry_domain(config.server_address)
    endpoint = svc.hosts.push_endpoint(domain)  # the registry itself, never a mirror
    url = endpoint.url("/v2/")
    client = svc.client(config.credentials)
    failed = f"login attempt to {url} failed with status: 401 Unauthorized"
    reply = client.transport.request("GET", url)
    if reply.status == 401:
        header = reply.header("WWW-Authenticate")
        reply.close()
        try:
            answer = client.auth.challenge(endpoint.host, [], header, None, failed)
        except Unauthorized as e:
            raise Unauthorized(str(e) if str(e) == INCORRECT_CREDENTIALS else failed) from None
        reply = client.transport.request("GET", url, {"Authorization": answer})
        if reply.status in (401, 403):
            reply.close()
            raise Unauthorized(failed if answer.startswith("Basic ") else INCORRECT_CREDENTIALS)
    with raise_for_status(reply, 200):
        pass
    return {"Status": LOGIN_SUCCEEDED, "IdentityToken": ""}
