"""Reading image request parameters as dockerd does (pure functions)."""

from __future__ import annotations

import base64
import json

import pytest

from pydeskd.api.image_requests import (
    credentials_of,
    filter_time,
    has_label,
    parse_filters,
    platform_of,
    platforms_of,
    pull_reference,
)
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.oci import Platform

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("from_image", "tag", "expected"), [
    ("busybox", "latest", "docker.io/library/busybox:latest"),
    ("busybox", "", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "", "docker.io/library/busybox:1.36"),
    ("busybox:1.36", "1.37", "docker.io/library/busybox:1.37"),  # tag wins, as moby
    ("docker.io/library/busybox", "latest", "docker.io/library/busybox:latest"),
    ("busybox", DIGEST, f"docker.io/library/busybox@{DIGEST}"),
    (f"busybox@{DIGEST}", "", f"docker.io/library/busybox@{DIGEST}"),
    ("127.0.0.1:5000/test/x", "v1", "127.0.0.1:5000/test/x:v1"),
])
def test_pull_reference(from_image: str, tag: str, expected: str) -> None:
    assert str(pull_reference(from_image, tag)) == expected


def test_pull_reference_refuses_bad_names() -> None:
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        pull_reference("a/B", "")
    with pytest.raises(InvalidArgument):
        pull_reference("busybox", "bad tag!")


@pytest.mark.parametrize(("text", "expected"), [
    ("", {}),
    ('{"reference":{"busybox":true,"off":false}}', {"reference": ["busybox"]}),
    ('{"label":["a=b","c"]}', {"label": ["a=b", "c"]}),
])
def test_parse_filters_both_forms(text: str, expected: dict[str, list[str]]) -> None:
    assert parse_filters(text) == expected


@pytest.mark.parametrize("text", ["{", "[]", '{"a":"b"}', '{"a":1}'])
def test_parse_filters_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_filters(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", 1000.0 - 600), ("1h30m", 1000.0 - 5400), ("1.5s", 998.5), ("-1h", 4600.0),
    ("1700000000", 1700000000.0), ("1700000000.5", 1700000000.5),
    ("2023-11-14T22:13:20Z", 1700000000.0), ("2023-11-14T22:13:20.123456789Z", 1700000000.0),
])
def test_filter_time(text: str, expected: float) -> None:
    assert filter_time(text, now=1000.0) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["soon", "", "10x", "2023-13-45"])
def test_filter_time_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument, match="until"):
        filter_time(text, now=1000.0)


def test_has_label() -> None:
    labels = {"a": "1", "b": ""}
    assert has_label(labels, "a") and has_label(labels, "a=1") and has_label(labels, "b=")
    assert not has_label(labels, "a=2") and not has_label(labels, "c")


def test_credentials_and_platform() -> None:
    assert credentials_of(None) is None and credentials_of("") is None
    assert credentials_of(base64.urlsafe_b64encode(b"{}").decode()) is None
    header = base64.urlsafe_b64encode(json.dumps(
        {"username": "u", "password": "p", "serveraddress": "r:5000"}).encode()).decode()
    creds = credentials_of(header)
    assert creds is not None and (creds.username, creds.server_address) == ("u", "r:5000")
    with pytest.raises(InvalidArgument) as caught:
        credentials_of(base64.urlsafe_b64encode(b'{"password": "secret"').decode())
    assert "secret" not in str(caught.value)
    assert platform_of("") is None
    assert platform_of("linux/arm64") == Platform.parse("linux/arm64")
    with pytest.raises(InvalidArgument):
        platform_of("a/b/c/d")


def test_platforms_of_json_and_text() -> None:
    assert platforms_of([]) == [] and platforms_of([""]) == []
    assert platforms_of(['{"os":"linux","architecture":"arm64","variant":"v8"}',
                         "linux/amd64"]) == [Platform.parse("linux/arm64/v8"),
                                             Platform.parse("linux/amd64")]
    with pytest.raises(InvalidArgument):
        platforms_of(['{"os":'])
    with pytest.raises(InvalidArgument):
        platforms_of(['{"os":"linux"}'])
