"""Credentials: config.json auths, credential helpers (behind the runner seam), X-Registry-Auth."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument, Unavailable
from pydeskd.containerd.registry.credentials import (
    Credentials,
    DockerConfig,
    Explicit,
    HelperNotFound,
)


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auths_base64_for_docker_hub_under_index_server_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": b64("me:pa:ss")}}})
    config = DockerConfig(path)
    for host in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        assert config.get(host) == Credentials("me", "pa:ss")


def test_auths_by_host_port_with_or_without_scheme(tmp_path: Path) -> None:
    path = write(tmp_path, {"auths": {
        "127.0.0.1:5000": {"username": "u", "password": "p"},
        "https://reg.example.com/v2/": {"auth": b64("x:y")},
        "tok.example.com": {"identitytoken": "refresh"},
    }})
    config = DockerConfig(path)
    assert config.get("127.0.0.1:5000") == Credentials("u", "p")
    assert config.get("reg.example.com") == Credentials("x", "y")
    assert config.get("tok.example.com") == Credentials(identity_token="refresh")
    assert config.get("127.0.0.1:5001") is None
    assert config.get("docker.io") is None


def test_missing_config_is_anonymous(tmp_path: Path) -> None:
    assert DockerConfig(tmp_path / "nope.json").get("docker.io") is None


@pytest.mark.parametrize("doc", [[], {"auths": []}, {"auths": {"h": {"auth": "!!!"}}},
                                 {"auths": {"h": {"auth": b64("nocolon")}}}])
def test_malformed_config_is_invalid_without_secrets(tmp_path: Path, doc: object) -> None:
    with pytest.raises(InvalidArgument) as e:
        DockerConfig(write(tmp_path, doc)).get("h")
    assert "nocolon" not in str(e.value)


class FakeHelpers:
    def __init__(self, answers: dict[tuple[str, str], dict[str, str] | None]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def __call__(self, program: str, server: str) -> bytes:
        self.calls.append((program, server))
        answer = self.answers.get((program, server))
        if answer is None:
            raise HelperNotFound(server)
        return json.dumps(answer).encode()


def test_cred_helper_per_registry_wins(tmp_path: Path) -> None:
    path = write(tmp_path, {"credHelpers": {"ecr.example.com": "ecr-login"},
                            "credsStore": "desktop",
                            "auths": {"ecr.example.com": {"auth": b64("inline:x")}}})
    helpers = FakeHelpers({("docker-credential-ecr-login", "ecr.example.com"):
                           {"ServerURL": "ecr.example.com", "Username": "AWS", "Secret": "s"}})
    assert DockerConfig(path, helpers).get("ecr.example.com") == Credentials("AWS", "s")
    assert helpers.calls == [("docker-credential-ecr-login", "ecr.example.com")]


def test_creds_store_then_inline_auths(tmp_path: Path) -> None:
    path = write(tmp_path, {"credsStore": "desktop",
                            "auths": {"other.example.com": {"auth": b64("inline:x")}}})
    helpers = FakeHelpers({("docker-credential-desktop", "https://index.docker.io/v1/"):
                           {"Username": "<token>", "Secret": "refresh"}})
    config = DockerConfig(path, helpers)
    assert config.get("registry-1.docker.io") == Credentials(identity_token="refresh")
    # Not in the store: the inline entry.
    assert config.get("other.example.com") == Credentials("inline", "x")


def test_cred_helper_name_cannot_name_another_program(tmp_path: Path) -> None:
    path = write(tmp_path, {"credsStore": "../../bin/sh"})
    with pytest.raises(InvalidArgument, match="credential helper"):
        DockerConfig(path, FakeHelpers({})).get("docker.io")


def test_cred_helper_failure_does_not_leak_output(tmp_path: Path) -> None:
    path = write(tmp_path, {"credsStore": "broken"})

    def runner(program: str, server: str) -> bytes:
        return b"not json SECRET"

    with pytest.raises(Unavailable) as e:
        DockerConfig(path, runner).get("docker.io")
    assert "SECRET" not in str(e.value)


def test_run_helper_for_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The seam itself, with a helper script on PATH (no privileges needed).
    helper = tmp_path / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread server\n[ "$1" = get ] || exit 2\n'
                      'if [ "$server" = reg.test ]; then\n'
                      '  echo \'{"ServerURL":"reg.test","Username":"u","Secret":"s"}\'\n'
                      'else echo "credentials not found in native keychain"; exit 1; fi\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    config = DockerConfig(write(tmp_path, {"credsStore": "fake"}))
    assert config.get("reg.test") == Credentials("u", "s")
    assert config.get("other.test") is None


def test_x_registry_auth_decoding() -> None:
    doc = {"username": "u", "password": "p", "serveraddress": "reg.test",
           "identitytoken": "", "registrytoken": ""}
    header = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    assert Credentials.from_registry_auth(header) == Credentials("u", "p",
                                                                 server_address="reg.test")
    assert Credentials.from_registry_auth("").empty
    with pytest.raises(InvalidArgument) as e:
        Credentials.from_registry_auth("!!!not-base64 SECRET")
    assert "SECRET" not in str(e.value)


def test_repr_masks_secrets() -> None:
    text = repr(Credentials("u", "PASSWORD", "IDTOKEN", "REGTOKEN"))
    assert "u" in text
    assert not any(s in text for s in ("PASSWORD", "IDTOKEN", "REGTOKEN"))


def test_explicit_credentials_override_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, {"auths": {"reg.test": {"auth": b64("file:x")}}})
    assert Explicit(Credentials("req", "y"), DockerConfig(path)).get("reg.test") == \
        Credentials("req", "y")
    assert Explicit(Credentials(), DockerConfig(path)).get("reg.test") == Credentials("file", "x")
    assert Explicit(None).get("reg.test") is None


def hub_header(**extra: str) -> str:
    doc = {"username": "hubuser", "password": "hub-secret", **extra}
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@pytest.mark.parametrize("header_server", [None, "https://index.docker.io/v1/", "docker.io"])
def test_request_credentials_for_docker_hub_never_reach_a_mirror_or_another_registry(
        header_server: str | None) -> None:
    extra = {} if header_server is None else {"serveraddress": header_server}
    source = Explicit(Credentials.from_registry_auth(hub_header(**extra)))
    assert source.get("registry-1.docker.io") is not None
    assert source.get("index.docker.io") is not None
    for other in ("127.0.0.1:5000", "mirror.example.com", "evil.example.com"):
        assert source.get(other) is None


def test_request_credentials_bound_to_their_registry_and_fallback_for_others(
        tmp_path: Path) -> None:
    path = write(tmp_path, {"auths": {"other.test": {"auth": b64("file:x")}}})
    source = Explicit(Credentials.from_registry_auth(
        hub_header(serveraddress="http://reg.test:5000/v2/")), DockerConfig(path))
    assert source.get("reg.test:5000") == Credentials("hubuser", "hub-secret",
                                                      server_address="http://reg.test:5000/v2/")
    assert source.get("reg.test") is None
    assert source.get("other.test") == Credentials("file", "x")
