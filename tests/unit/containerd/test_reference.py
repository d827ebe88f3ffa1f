"""Image references parse and normalize as the docker CLI does (distribution/reference cases)."""

from __future__ import annotations

import dataclasses

import pytest

from pydeskd.containerd.errors import ContainerdError, InvalidArgument
from pydeskd.containerd.reference import (
    Reference,
    parse_reference,
    registry_host,
    validate_digest,
)

pytestmark = pytest.mark.unit

D = "sha256:" + "0123456789abcdef" * 4
D384 = "sha384:" + "ab" * 48
FORMAT = "invalid reference format"


def upper(remote: str) -> str:
    return f"invalid reference format: repository name ({remote}) must be lowercase"


# text -> (canonical str(), familiar, domain, path)
VALID: list[tuple[str, str, str, str, str]] = [
    (
        "busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        "docker.io",
        "library/busybox",
    ),
    (
        "busybox:1.36",
        "docker.io/library/busybox:1.36",
        "busybox:1.36",
        "docker.io",
        "library/busybox",
    ),
    (
        "library/busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        "docker.io",
        "library/busybox",
    ),
    (
        "docker.io/busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        "docker.io",
        "library/busybox",
    ),
    (
        "docker.io/library/busybox:musl",
        "docker.io/library/busybox:musl",
        "busybox:musl",
        "docker.io",
        "library/busybox",
    ),
    (
        "index.docker.io/busybox",
        "docker.io/library/busybox:latest",
        "busybox:latest",
        "docker.io",
        "library/busybox",
    ),
    ("index.docker.io/user/app:1", "docker.io/user/app:1", "user/app:1", "docker.io", "user/app"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest", "docker.io", "user/app"),
    (
        "user/app/sub",
        "docker.io/user/app/sub:latest",
        "user/app/sub:latest",
        "docker.io",
        "user/app/sub",
    ),
    # "library/a/b" is not shortened: "a/b" would name user a's repository.
    (
        "library/a/b",
        "docker.io/library/a/b:latest",
        "library/a/b:latest",
        "docker.io",
        "library/a/b",
    ),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest", "localhost", "x"),
    (
        "localhost:5000/x",
        "localhost:5000/x:latest",
        "localhost:5000/x:latest",
        "localhost:5000",
        "x",
    ),
    # No "/": "localhost:5000" is the official image "localhost" with tag "5000".
    (
        "localhost:5000",
        "docker.io/library/localhost:5000",
        "localhost:5000",
        "docker.io",
        "library/localhost",
    ),
    (
        "example.com/a/b/c:v1",
        "example.com/a/b/c:v1",
        "example.com/a/b/c:v1",
        "example.com",
        "a/b/c",
    ),
    (
        "127.0.0.1:5000/foo",
        "127.0.0.1:5000/foo:latest",
        "127.0.0.1:5000/foo:latest",
        "127.0.0.1:5000",
        "foo",
    ),
    ("[::1]:5000/foo", "[::1]:5000/foo:latest", "[::1]:5000/foo:latest", "[::1]:5000", "foo"),
    ("[2001:db8::1]/foo:v", "[2001:db8::1]/foo:v", "[2001:db8::1]/foo:v", "[2001:db8::1]", "foo"),
    # An uppercase first component is read as a host, and host names may be uppercase.
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest", "Foo", "bar"),
    (
        "xn--n3h.com/emoji",
        "xn--n3h.com/emoji:latest",
        "xn--n3h.com/emoji:latest",
        "xn--n3h.com",
        "emoji",
    ),
    ("a.b-c.d/e", "a.b-c.d/e:latest", "a.b-c.d/e:latest", "a.b-c.d", "e"),
    (
        "foo_bar",
        "docker.io/library/foo_bar:latest",
        "foo_bar:latest",
        "docker.io",
        "library/foo_bar",
    ),
    (
        "foo__bar",
        "docker.io/library/foo__bar:latest",
        "foo__bar:latest",
        "docker.io",
        "library/foo__bar",
    ),
    (
        "foo-----bar",
        "docker.io/library/foo-----bar:latest",
        "foo-----bar:latest",
        "docker.io",
        "library/foo-----bar",
    ),
    (
        "foo.bar-baz_qux",
        "docker.io/library/foo.bar-baz_qux:latest",
        "foo.bar-baz_qux:latest",
        "docker.io",
        "library/foo.bar-baz_qux",
    ),
    (
        "busybox:v1.2-rc_3",
        "docker.io/library/busybox:v1.2-rc_3",
        "busybox:v1.2-rc_3",
        "docker.io",
        "library/busybox",
    ),
    (
        "busybox:LATEST",
        "docker.io/library/busybox:LATEST",
        "busybox:LATEST",
        "docker.io",
        "library/busybox",
    ),
    ("busybox:_x", "docker.io/library/busybox:_x", "busybox:_x", "docker.io", "library/busybox"),
    (
        "busybox:" + "t" * 128,
        "docker.io/library/busybox:" + "t" * 128,
        "busybox:" + "t" * 128,
        "docker.io",
        "library/busybox",
    ),
    # A digest alone pins the image: no ":latest" is added.
    (
        f"busybox@{D}",
        f"docker.io/library/busybox@{D}",
        f"busybox@{D}",
        "docker.io",
        "library/busybox",
    ),
    (
        f"busybox:1.36@{D}",
        f"docker.io/library/busybox:1.36@{D}",
        f"busybox:1.36@{D}",
        "docker.io",
        "library/busybox",
    ),
    (
        f"example.com:8443/ns/app@{D384}",
        f"example.com:8443/ns/app@{D384}",
        f"example.com:8443/ns/app@{D384}",
        "example.com:8443",
        "ns/app",
    ),
    # The 255 limit is on the path (distribution/reference today); the domain does not count.
    (
        "example.com/" + "a" * 255,
        "example.com/" + "a" * 255 + ":latest",
        "example.com/" + "a" * 255 + ":latest",
        "example.com",
        "a" * 255,
    ),
]

# text -> Docker's message (matched as the whole message)
INVALID: list[tuple[str, str]] = [
    ("", FORMAT),
    ("Busybox", upper("library/Busybox")),
    ("user/App", upper("user/App")),
    ("docker.io/Library/busybox", upper("Library/busybox")),
    ("example.com:5000/Foo", upper("Foo")),
    ("busybox:", FORMAT),
    (":latest", FORMAT),
    ("busybox:tag:other", FORMAT),
    ("-busybox", FORMAT),
    ("busybox-", FORMAT),
    ("foo._bar", FORMAT),
    ("foo___bar", FORMAT),
    ("a/", FORMAT),
    ("/a", FORMAT),
    ("a//b", FORMAT),
    ("example.com/", FORMAT),
    ("busybox:-tag", FORMAT),
    ("busybox:.tag", FORMAT),
    ("busybox:" + "t" * 129, FORMAT),
    ("busybox tag", FORMAT),
    ("büsybox", FORMAT),
    ("busybox:tägg", FORMAT),
    ("busybox@", FORMAT),
    ("busybox@sha256:abc", FORMAT),
    ("busybox@sha256:" + "a" * 32, "invalid checksum digest length"),
    ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("busybox@sha256:" + "A" * 64, "invalid checksum digest format"),
    # go-digest checks the length before the alphabet.
    ("busybox@sha256:" + "A" * 32, "invalid checksum digest length"),
    ("localhost:abc/x", FORMAT),
    ("-example.com/x", FORMAT),
    ("example-.com/x", FORMAT),
    ("a" * 64, f"invalid repository name ({'a' * 64}), cannot specify 64-byte hexadecimal strings"),
    ("example.com/" + "a" * 256, "repository name must not be more than 255 characters"),
]


@pytest.mark.parametrize(("text", "canonical", "familiar", "domain", "path"), VALID)
def test_valid(text: str, canonical: str, familiar: str, domain: str, path: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == canonical
    assert ref.familiar == familiar
    assert (ref.domain, ref.path) == (domain, path)
    assert ref.name == f"{domain}/{path}"
    assert ref.repository == path


@pytest.mark.parametrize(("text", "canonical", "familiar", "domain", "path"), VALID)
def test_round_trips(text: str, canonical: str, familiar: str, domain: str, path: str) -> None:
    ref = parse_reference(text)
    # The canonical and the familiar forms both name the very same reference again.
    assert parse_reference(str(ref)) == ref
    assert parse_reference(ref.familiar) == ref
    assert Reference(ref.domain, ref.path, ref.tag, ref.digest) == ref


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_reference(text)
    assert str(info.value) == message


def test_64_hex_is_refused_only_alone() -> None:
    hexname = "0123456789abcdef" * 4
    # As a path below a namespace, or with a tag, it is an ordinary name for Docker.
    assert parse_reference(f"user/{hexname}").path == f"user/{hexname}"
    assert parse_reference(f"{hexname}:v1").path == f"library/{hexname}"


def test_tag_and_digest_kept_separately() -> None:
    ref = parse_reference(f"busybox:1.36@{D}")
    assert (ref.tag, ref.digest) == ("1.36", D)
    # The registry is asked for the digest, which pins the content; the tag is informative.
    assert ref.reference == D
    assert parse_reference("busybox:1.36").reference == "1.36"


def test_default_tag() -> None:
    assert parse_reference("busybox", default_tag="stable").tag == "stable"
    bare = parse_reference("busybox", default_tag=None)
    assert (bare.tag, bare.digest) == (None, None)
    assert str(bare) == "docker.io/library/busybox"
    assert bare.familiar == "busybox"
    with pytest.raises(InvalidArgument):
        _ = bare.reference
    # An explicit tag wins over the default.
    assert parse_reference("busybox:1", default_tag="stable").tag == "1"
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        parse_reference("busybox", default_tag="-bad")


def test_with_tag_drops_digest_and_validates() -> None:
    ref = parse_reference(f"localhost:5000/x:old@{D}")
    retagged = ref.with_tag("new")
    assert str(retagged) == "localhost:5000/x:new"
    assert retagged.digest is None
    assert ref.tag == "old"  # frozen: the original is unchanged
    with pytest.raises(InvalidArgument):
        ref.with_tag("bad tag")
    assert str(parse_reference("busybox").with_digest(D)) == f"docker.io/library/busybox:latest@{D}"
    with pytest.raises(InvalidArgument):
        ref.with_digest("sha256:xyz")


def test_frozen() -> None:
    ref = parse_reference("busybox")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("domain", "path", "tag", "digest", "message"),
    [
        ("docker.io", "library/Busybox", None, None, upper("library/Busybox")),
        ("docker.io", "library//busybox", None, None, FORMAT),
        ("not a host", "x", None, None, FORMAT),
        ("docker.io", "x", "bad tag", None, FORMAT),
        ("docker.io", "x", None, "sha256:abc", "invalid checksum digest length"),
        (
            "example.com",
            "a" * 256,
            None,
            None,
            "repository name must not be more than 255 characters",
        ),
    ],
)
def test_constructor_validates(
    domain: str, path: str, tag: str | None, digest: str | None, message: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        Reference(domain, path, tag, digest)
    assert str(info.value) == message


def test_registry_host() -> None:
    assert registry_host("docker.io") == "registry-1.docker.io"
    assert registry_host("index.docker.io") == "registry-1.docker.io"
    assert registry_host("localhost:5000") == "localhost:5000"
    assert parse_reference("busybox").registry_host == "registry-1.docker.io"
    assert parse_reference("ghcr.io/o/r").registry_host == "ghcr.io"
    assert parse_reference("busybox").repository == "library/busybox"


def test_validate_digest() -> None:
    assert validate_digest(D) == D
    assert validate_digest("sha512:" + "f" * 128).startswith("sha512:")
    for bad, message in [
        ("sha256", "invalid checksum digest format"),
        ("sha256:", "invalid checksum digest format"),
        (":abc", "invalid checksum digest format"),
        ("not a digest:zz", "invalid checksum digest format"),
        ("sha1:" + "a" * 40, "unsupported digest algorithm"),
        ("sha512:" + "f" * 64, "invalid checksum digest length"),
        ("sha256:" + "g" * 64, "invalid checksum digest format"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            validate_digest(bad)
        assert str(info.value) == message


def test_errors_share_the_layer_base() -> None:
    # The daemon maps errors by kind; a reference error must be a containerd-layer error.
    with pytest.raises(ContainerdError):
        parse_reference("UPPER")
