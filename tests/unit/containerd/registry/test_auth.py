"""Auth: challenge parsing, the Bearer token flow and cache, Basic, refusals with clear messages."""

from __future__ import annotations

import pytest

from pydeskd.containerd.errors import Unauthorized
from pydeskd.containerd.registry import Credentials, Explicit, RegistryClient, RegistryHosts
from pydeskd.containerd.registry.auth import Challenge, normalize_scopes, parse_challenges
from pydeskd.containerd.registry.transport import Transport
from tests.unit.containerd.registry.fakes import FakeBackend, FakeRegistry, Request, Response


@pytest.mark.parametrize(("header", "expected"), [
    ('Basic realm="registry"', [Challenge("basic", {"realm": "registry"})]),
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
     'scope="repository:library/busybox:pull"',
     [Challenge("bearer", {"realm": "https://auth.docker.io/token",
                           "service": "registry.docker.io",
                           "scope": "repository:library/busybox:pull"})]),
    # Several challenges in one header, spaces around "=" and ",".
    ('Bearer realm="https://a/t", service="s" , Basic realm="b"',
     [Challenge("bearer", {"realm": "https://a/t", "service": "s"}),
      Challenge("basic", {"realm": "b"})]),
    # Scheme case, token (unquoted) values, escaped quotes, commas inside quotes.
    ('BEARER realm=https://a/t,scope="repository:x:pull,push",error="say \\"hi\\""',
     [Challenge("bearer", {"realm": "https://a/t", "scope": "repository:x:pull,push",
                           "error": 'say "hi"'})]),
    ("Basic", [Challenge("basic", {})]),
    ("", []),
])
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_for(registry: FakeRegistry, creds: Credentials | None = None,
               clock: Clock | None = None) -> tuple[RegistryClient, FakeBackend]:
    backend = FakeBackend(registry)
    transport = Transport(backend, sleep=lambda s: None)
    client = RegistryClient(RegistryHosts(insecure=("reg.test",)), Explicit(creds),
                            transport=transport, clock=clock or Clock(), sleep=lambda s: None)
    return client, backend


def _image(registry: FakeRegistry, repo: str = "app") -> None:
    registry.put_manifest(repo, "v1", "application/vnd.oci.image.manifest.v1+json",
                          b'{"schemaVersion":2,"config":{},"layers":[]}')


def test_token_flow_anonymous_then_cached_until_expiry() -> None:
    registry = FakeRegistry(auth="token")
    registry.expires_in = 0  # absent/too small -> Docker's 60 s minimum
    _image(registry)
    clock = Clock()
    client, backend = client_for(registry, clock=clock)
    client.resolve("reg.test/app:v1")
    assert registry.token_hits == 1
    token_request = backend.matching("GET", "auth.test")[0]
    assert token_request.query == {"service": ["fake"], "scope": ["repository:app:pull"]}
    assert token_request.header("Authorization") is None  # anonymous
    # Reused, and sent up front (no second 401 round trip).
    before = len(backend.requests)
    client.resolve("reg.test/app:v1")
    assert registry.token_hits == 1
    assert len(backend.requests) == before + 1
    clock.now += 59
    client.resolve("reg.test/app:v1")
    assert registry.token_hits == 1
    clock.now += 2  # past 60 s: a new token
    client.resolve("reg.test/app:v1")
    assert registry.token_hits == 2


def test_token_cache_is_per_scope_set() -> None:
    registry = FakeRegistry(auth="token")
    _image(registry, "a")
    _image(registry, "b")
    client, _ = client_for(registry)
    client.resolve("reg.test/a:v1")
    client.resolve("reg.test/b:v1")
    client.resolve("reg.test/a:v1")
    assert registry.token_hits == 2


def test_token_with_basic_credentials() -> None:
    registry = FakeRegistry(auth="token")
    _image(registry)
    client, backend = client_for(registry, Credentials("user", "secret"))
    client.resolve("reg.test/app:v1")
    token_request = backend.matching("GET", "auth.test")[0]
    assert token_request.header("Authorization", ) == "Basic dXNlcjpzZWNyZXQ="
    # The registry itself never sees the password.
    assert all("Basic" not in (r.header("Authorization") or "")
               for r in backend.requests if r.host == "reg.test")


def test_token_with_identity_token_uses_oauth_post() -> None:
    registry = FakeRegistry(auth="token")
    _image(registry)
    client, backend = client_for(registry, Credentials(identity_token="refresh-me"))
    client.resolve("reg.test/app:v1")
    [post] = backend.matching("POST", "auth.test")
    assert b"grant_type=refresh_token" in (post.body or b"")
    assert post.header("Authorization") is None


def test_token_server_refuses_wrong_password() -> None:
    registry = FakeRegistry(auth="token")
    _image(registry)
    client, _ = client_for(registry, Credentials("user", "wrong"))
    with pytest.raises(Unauthorized, match=r"^unauthorized: incorrect username or password$") as e:
        client.resolve("reg.test/app:v1")
    assert "wrong" not in str(e.value)


def test_push_scope_refused_to_anonymous() -> None:
    registry = FakeRegistry(auth="token")
    client, _ = client_for(registry)
    with pytest.raises(Unauthorized, match="denied: requested access to the resource is denied"):
        client.push_manifest("reg.test/app", "v1", "application/json", b"{}")


def test_basic_anonymous_first_then_credentials_up_front() -> None:
    registry = FakeRegistry(auth="basic")
    _image(registry)
    client, backend = client_for(registry, Credentials("user", "secret"))
    client.resolve("reg.test/app:v1")
    first, second = backend.requests[:2]
    assert first.header("Authorization") is None
    assert second.header("Authorization") == "Basic dXNlcjpzZWNyZXQ="
    before = len(backend.requests)
    client.resolve("reg.test/app:v1")
    assert len(backend.requests) == before + 1  # the host's challenge is remembered


def test_basic_wrong_credentials() -> None:
    registry = FakeRegistry(auth="basic")
    _image(registry)
    client, _ = client_for(registry, Credentials("user", "nope"))
    for _ in range(2):  # also when Basic is sent up front the second time
        with pytest.raises(Unauthorized, match=r"^unauthorized: incorrect username or password$"):
            client.resolve("reg.test/app:v1")


def test_basic_without_credentials_is_pull_access_denied() -> None:
    registry = FakeRegistry(auth="basic")
    _image(registry)
    client, _ = client_for(registry)
    with pytest.raises(Unauthorized) as e:
        client.resolve("reg.test/app:v1")
    assert str(e.value) == ("pull access denied for reg.test/app, repository does not exist or "
                            "may require 'docker login'")


def test_registry_token_is_sent_as_is() -> None:
    registry = FakeRegistry(auth="token")
    registry.issued["given"] = {"repository:app:pull"}
    _image(registry)
    client, _ = client_for(registry, Credentials(registry_token="given"))
    client.resolve("reg.test/app:v1")
    assert registry.token_hits == 0


def test_credentials_are_looked_up_once_per_host() -> None:
    registry = FakeRegistry(auth="basic")
    _image(registry)
    asked: list[str] = []

    class Counting:
        def get(self, host: str) -> Credentials | None:
            asked.append(host)  # a credential helper would be a subprocess each time
            return Credentials("user", "secret")

    client = RegistryClient(RegistryHosts(insecure=("reg.test",)), Counting(),
                            transport=Transport(FakeBackend(registry), sleep=lambda s: None))
    for _ in range(3):
        client.resolve("reg.test/app:v1")
    assert asked == ["reg.test"]


def test_with_credentials_shares_the_transport_not_the_tokens() -> None:
    registry = FakeRegistry(auth="basic")
    _image(registry)
    anonymous, _ = client_for(registry)
    client = anonymous.with_credentials(Explicit(Credentials("user", "secret")))
    assert client.transport is anonymous.transport
    client.resolve("reg.test/app:v1")
    with pytest.raises(Unauthorized, match="pull access denied"):
        anonymous.resolve("reg.test/app:v1")


@pytest.mark.parametrize(("scopes", "expected"), [
    (["repository:a:pull"], ("repository:a:pull",)),
    (["repository:a:push,pull", "repository:a:pull"], ("repository:a:pull,push",)),
    (["repository:b:pull repository:a:push", "repository:a:pull"],
     ("repository:a:pull,push", "repository:b:pull")),
    (["registry:catalog:*"], ("registry:catalog:*",)),
    (["odd"], ("odd",)),
])
def test_normalize_scopes(scopes: list[str], expected: tuple[str, ...]) -> None:
    assert normalize_scopes(scopes) == expected


def test_challenge_scope_in_another_spelling_still_hits_the_cache() -> None:
    registry = FakeRegistry(auth="token")
    original = registry._authorized

    def reordered(req: Request, repo: str, action: str) -> Response | None:
        answer = original(req, repo, action)
        if answer is not None and "WWW-Authenticate" in answer.headers:
            header = answer.headers["WWW-Authenticate"].replace(":pull\"", ":pull,pull\"")
            return Response(401, b"", {"WWW-Authenticate": header})
        return answer

    registry._authorized = reordered  # type: ignore[method-assign]
    _image(registry)
    client, _ = client_for(registry)
    for _ in range(3):
        client.resolve("reg.test/app:v1")
    assert registry.token_hits == 1
