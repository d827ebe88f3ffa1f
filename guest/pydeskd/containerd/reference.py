"""Image references: parse and normalize names exactly as the Docker CLI and Engine do.

``busybox`` means ``docker.io/library/busybox:latest`` to every Docker client, and users see
``busybox:latest`` back in ``docker images``. The image store, the registry client and the daemon
must all agree on that mapping, so it lives here, once: the grammar of distribution/reference
(``regexp.go``) and the normalization rules of ``normalize.go`` (``ParseNormalizedNamed``,
``FamiliarName``), re-implemented from their documented behaviour.

This module is pure: it must never touch the network, the disk or the store, and it must never
accept a name that Docker refuses (or refuse one Docker accepts), because a reference that one
side accepts and the other does not would make the same image unreachable by the name the user
typed. Every refusal is an ``InvalidArgument`` carrying Docker's message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydeskd.containerd.errors import InvalidArgument

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "NAME_TOTAL_LENGTH_MAX",
    "Reference",
    "parse_reference",
    "registry_host",
    "validate_digest",
    "validate_tag",
]

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
# Docker Hub's own old name; normalized away so that both spellings find the same image.
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
# docker.io is a name, not a host: the Hub's registry API is served from this one.
DEFAULT_REGISTRY_HOST = "registry-1.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255

ERR_FORMAT = "invalid reference format"
ERR_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"


def _err_uppercase(remote: str) -> InvalidArgument:
    # Docker names the offending part: "repository name (library/Busybox) must be lowercase".
    return InvalidArgument(
        f"invalid reference format: repository name ({remote}) must be lowercase"
    )


# --- the grammar (distribution/reference regexp.go), ASCII only ---------------------------------
# re.ASCII everywhere: Python's \w would otherwise accept non-ASCII letters that Go's \w refuses.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH}"

_REFERENCE_RE = re.compile(
    rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII
)
# Greedy optional domain: like Go's leftmost-first match, a first component that can be a
# domain is taken as the domain. Callers have already put a domain in front (see _split_domain).
_NAME_RE = re.compile(rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)
_PATH_RE = re.compile(_PATH, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
# An image ID typed where a name is expected: Docker refuses it rather than look up a repository
# with that name, so that "docker pull <id>" can never fetch something unrelated.
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)

# Algorithms the store can verify, with the length of their lowercase hex encoding (go-digest).
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it matches Docker's tag grammar; raise ``InvalidArgument`` otherwise."""
    if not _TAG_RE.fullmatch(tag):
        raise InvalidArgument(ERR_FORMAT)
    return tag


def validate_digest(digest: str) -> str:
    """Return ``digest`` (``algorithm:hex``) if the store can verify it; raise ``InvalidArgument``.

    The grammar alone accepts any algorithm and 32+ hex digits; as go-digest, only known
    algorithms with an encoding of exactly the right length in lowercase hex are usable.
    """
    algorithm, sep, encoded = digest.partition(":")
    if not sep or not algorithm or not encoded:
        raise InvalidArgument("invalid checksum digest format")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        if not _DIGEST_RE.fullmatch(digest):
            raise InvalidArgument("invalid checksum digest format")
        raise InvalidArgument("unsupported digest algorithm")
    # Length before alphabet, as go-digest: the message says which check failed first there.
    if len(encoded) != expected:
        raise InvalidArgument("invalid checksum digest length")
    if not _LOWER_HEX_RE.fullmatch(encoded):
        raise InvalidArgument("invalid checksum digest format")
    return digest


def registry_host(domain: str) -> str:
    """The host (with port, if any) that serves the registry API for ``domain``."""
    if domain in (DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN):
        return DEFAULT_REGISTRY_HOST
    return domain


@dataclass(frozen=True)
class Reference:
    """A fully normalized image reference: ``domain/path[:tag][@digest]``.

    Always holds the canonical form (``docker.io``, ``library/`` for official images); the short
    form users type and see is derived (``familiar``), never stored, so two spellings of one
    image compare equal. Build one with ``parse_reference``; the constructor validates too.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if not _DOMAIN_RE.fullmatch(self.domain):
            raise InvalidArgument(ERR_FORMAT)
        if not _PATH_RE.fullmatch(self.path):
            if _PATH_RE.fullmatch(self.path.lower()):
                raise _err_uppercase(self.path)
            raise InvalidArgument(ERR_FORMAT)
        if len(self.path) > NAME_TOTAL_LENGTH_MAX:
            raise InvalidArgument(ERR_TOO_LONG)
        if self.tag is not None:
            validate_tag(self.tag)
        if self.digest is not None:
            validate_digest(self.digest)

    @property
    def name(self) -> str:
        """The canonical repository name, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        """The repository part of registry API URLs (``/v2/<repository>/manifests/...``)."""
        return self.path

    @property
    def registry_host(self) -> str:
        """The host serving this reference's registry API (``registry-1.docker.io`` for the Hub)."""
        return registry_host(self.domain)

    @property
    def familiar_name(self) -> str:
        """The name as Docker shows it: ``busybox``, ``user/app``, ``localhost:5000/x``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        # Only a single-component official name is shortened: "library/a/b" stays as is, since
        # "a/b" would mean the user "a"'s repository.
        rest = self.path.removeprefix(OFFICIAL_REPO_PREFIX)
        if rest != self.path and "/" not in rest:
            return rest
        return self.path

    @property
    def familiar(self) -> str:
        """The short form Docker prints: ``busybox:latest``, ``user/app@sha256:...``."""
        return self.familiar_name + self._suffix()

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if pinned, else the tag."""
        if self.digest is not None:
            return self.digest
        if self.tag is not None:
            return self.tag
        raise InvalidArgument(f"reference {self} has neither a tag nor a digest")

    def with_tag(self, tag: str) -> Reference:
        """The same repository with ``tag`` and no digest (what ``docker tag`` creates)."""
        return Reference(self.domain, self.path, validate_tag(tag), None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest``, keeping the tag (``name:tag@digest``)."""
        return Reference(self.domain, self.path, self.tag, validate_digest(digest))

    def _suffix(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return tag + digest

    def __str__(self) -> str:
        return self.name + self._suffix()


def _split_domain(name: str) -> tuple[str, str]:
    """Split a name as typed into (domain, remainder), adding Docker's defaults.

    The first component is a domain only if it looks like a host: it contains "." or ":", is
    "localhost", or has an uppercase letter (repository paths cannot, so Docker reads it as a
    host). Anything else is a Docker Hub path, and a single component is an official image.
    """
    first, sep, rest = name.partition("/")
    if not sep or (
        "." not in first and ":" not in first and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_reference(text: str, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse a reference as the docker CLI does (``ParseNormalizedNamed`` then ``TagNameOnly``).

    ``default_tag`` is added only when the text has neither a tag nor a digest (``docker pull
    busybox@sha256:...`` is not also ``:latest``); pass ``None`` to keep a bare name bare.

    Raises ``InvalidArgument`` with Docker's message for anything Docker refuses.
    """
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidArgument(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(text)
    # Docker checks case on the repository part before the grammar, for a clearer message than
    # "invalid reference format"; a ":" here starts the tag (the domain is already split off).
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise _err_uppercase(remote)
    full = f"{domain}/{remainder}"
    match = _REFERENCE_RE.fullmatch(full)
    if match is None:
        # Even "" lands here: the defaults make it "docker.io/library/", as in Docker.
        raise InvalidArgument(ERR_FORMAT)
    parts = _NAME_RE.fullmatch(match.group("name"))
    # The name matched the reference grammar, so it matches the name grammar; a domain is always
    # there because _split_domain put one in front.
    assert parts is not None and parts.group("domain") is not None
    # As distribution/reference today, the limit applies to the path: the domain does not count.
    if len(parts.group("path")) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(ERR_TOO_LONG)
    tag: str | None = match.group("tag")
    digest: str | None = match.group("digest")
    if digest is not None:
        validate_digest(digest)
    if tag is None and digest is None and default_tag is not None:
        tag = validate_tag(default_tag)
    return Reference(parts.group("domain"), parts.group("path"), tag, digest)
