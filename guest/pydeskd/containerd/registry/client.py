"""The registry client: resolve references, fetch manifests and blobs, push blobs and manifests.

What it is for: ``RegistryClient`` is the only object the pull and push orchestration
(``containerd/pull.py``, ``push.py``) talks to. It speaks the OCI distribution API
(``/v2/<name>/manifests/<ref>``, ``/v2/<name>/blobs/<digest>``, ``/v2/<name>/blobs/uploads/``)
through the endpoints ``RegistryHosts`` gives (mirrors first, for Docker Hub, falling through to
the next endpoint on any failure), answers auth challenges with the ``Authorizer``, and verifies
what it receives (size and digest) before handing it on. Blob download is in ``fetch``, upload in
``push``; the methods here delegate to them.

What it must never do: return bytes it has not verified against a digest it was given or told,
send a push to a mirror, or let a secret reach an error message.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from pydeskd.containerd import oci
from pydeskd.containerd.content import Provider, validate_digest
from pydeskd.containerd.errors import (
    ContainerdError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthorized,
    Unavailable,
)
from pydeskd.containerd.progress import Reporter, discard
from pydeskd.containerd.reference import Reference, parse_reference
from pydeskd.containerd.registry import fetch as _fetch
from pydeskd.containerd.registry import push as _push
from pydeskd.containerd.registry.auth import INCORRECT_CREDENTIALS, Authorizer, repository_scope
from pydeskd.containerd.registry.credentials import Anonymous, CredentialSource
from pydeskd.containerd.registry.hosts import Endpoint, RegistryHosts
from pydeskd.containerd.registry.transport import Reply, Transport, _same_origin, raise_for_status

log = logging.getLogger(__name__)

# Larger manifests are refused unread (containerd's limit is of the same order).
MAX_MANIFEST_SIZE = 4 << 20
# A mirror that could not be reached (after the transport's retries) is skipped this long, so a
# dead mirror costs one round of retries per pull, not one per blob.
MIRROR_DOWN_FOR = 30.0
MANIFEST_ACCEPT_HEADER = ", ".join(oci.MANIFEST_ACCEPT)
PULL = ("pull",)
PUSH = ("pull", "push")

T = TypeVar("T")


def as_reference(ref: Reference | str, default_tag: str | None = None) -> Reference:
    """A ``Reference`` as is; a string parsed as the docker CLI parses it."""
    return ref if isinstance(ref, Reference) else parse_reference(ref, default_tag)


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """Talks to registries for one set of credentials; thread-safe, shareable by many pulls.

    ``transport`` may be shared by clients with different credentials (one per API request
    carrying ``X-Registry-Auth``) so that they share connection pools; the token cache is per
    client. ``chunk_size`` and ``monolithic_limit`` shape uploads (blobs up to the limit go in one
    PUT, larger ones in PATCH chunks of ``chunk_size``).
    """

    def __init__(self, hosts: RegistryHosts | None = None,
                 credentials: CredentialSource | None = None, *,
                 transport: Transport | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 chunk_size: int = 16 << 20, monolithic_limit: int = 32 << 20,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.hosts = hosts if hosts is not None else RegistryHosts()
        self.credentials = credentials if credentials is not None else Anonymous()
        self.transport = transport if transport is not None else Transport(sleep=sleep)
        self.auth = Authorizer(self.transport, self.credentials, clock)
        self.chunk_size = chunk_size
        self.monolithic_limit = monolithic_limit
        self.sleep = sleep
        self._lock = threading.Lock()
        self._mirrors_down: dict[str, float] = {}  # base URL -> clock time to try it again

    def with_credentials(self, credentials: CredentialSource) -> RegistryClient:
        """A client for other credentials (an API request's X-Registry-Auth) sharing this one's
        hosts, transport (connection pools) and upload settings, with its own token cache."""
        return RegistryClient(self.hosts, credentials, transport=self.transport,
                              clock=self.auth.clock, chunk_size=self.chunk_size,
                              monolithic_limit=self.monolithic_limit, sleep=self.sleep)

    # --- requests -------------------------------------------------------------------------

    def denied_message(self, repo: Reference, actions: Sequence[str]) -> str:
        if "push" in actions:
            return "denied: requested access to the resource is denied"
        return (f"pull access denied for {repo.familiar_name}, repository does not exist or may "
                "require 'docker login'")

    def request(self, endpoint: Endpoint, repo: Reference, actions: Sequence[str], method: str,
                path_or_url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, retry: bool = True,
                extra_scopes: Sequence[str] = ()) -> Reply:
        """One authorized registry request (a 401 is answered once). The caller closes the reply.

        Raises Unauthorized (refused), Unavailable (unreachable after retries).
        """
        url = path_or_url if "://" in path_or_url else endpoint.url(path_or_url)
        scopes = [repository_scope(repo.path, *actions), *extra_scopes]
        denied = self.denied_message(repo, actions)
        # Credentials are for the endpoint; an upload Location on another host gets none.
        ours = _same_origin(url, endpoint.base_url)
        sent = self.auth.authorization(endpoint.host, scopes, denied) if ours else None
        reply = self.transport.request(method, url, self._with_auth(headers, sent), body,
                                       retry=retry)
        if reply.status != 401 or not ours:
            return self._check_denied(reply, repo, actions)
        header = reply.header("WWW-Authenticate")
        reply.close()
        answer = self.auth.challenge(endpoint.host, scopes, header, sent, denied)
        reply = self.transport.request(method, url, self._with_auth(headers, answer), body,
                                       retry=retry)
        if reply.status == 401:
            reply.close()
            creds = self.auth.credentials(endpoint.host)
            raise Unauthorized(INCORRECT_CREDENTIALS if not creds.empty
                               and answer.startswith("Basic ") else denied)
        return self._check_denied(reply, repo, actions)

    def _check_denied(self, reply: Reply, repo: Reference, actions: Sequence[str]) -> Reply:
        if reply.status == 403 and "push" not in actions:
            reply.close()
            raise Unauthorized(self.denied_message(repo, actions))
        return reply

    @staticmethod
    def _with_auth(headers: Mapping[str, str] | None, auth: str | None) -> dict[str, str]:
        out = dict(headers or {})
        if auth is not None:
            out["Authorization"] = auth
        return out

    def each_endpoint(self, repo: Reference, fn: Callable[[Endpoint], T]) -> T:
        """``fn`` on each pull endpoint in turn until one succeeds; the last failure propagates
        (a mirror's failure is logged and the next endpoint tried, as Docker does)."""
        endpoints = self.hosts.endpoints(repo.domain)
        for endpoint in endpoints[:-1]:
            with self._lock:
                down_until = self._mirrors_down.get(endpoint.base_url, 0.0)
            if down_until > self.auth.clock():
                continue  # unreachable a moment ago: not worth its retries again
            try:
                return fn(endpoint)
            except Unavailable as e:
                with self._lock:
                    self._mirrors_down[endpoint.base_url] = self.auth.clock() + MIRROR_DOWN_FOR
                log.info("mirror %s unreachable for %s, skipped for %ss: %s",
                         endpoint.base_url, repo.name, MIRROR_DOWN_FOR, e)
            except ContainerdError as e:
                log.info("mirror %s failed for %s, trying the next endpoint: %s",
                         endpoint.base_url, repo.name, e)
        return fn(endpoints[-1])

    # --- manifests ------------------------------------------------------------------------

    def resolve(self, ref: Reference | str) -> oci.Descriptor:
        """The descriptor of the manifest or index ``ref`` names (a digest reference resolves by
        its digest). HEAD first, GET when the registry's HEAD does not say enough.

        Raises NotFound ("manifest for NAME:TAG not found"), Unauthorized, Unavailable,
        FailedPrecondition (the registry's digest differs from the one asked for).
        """
        ref = as_reference(ref, "latest")
        return self.each_endpoint(ref, lambda ep: self._resolve_at(ep, ref))

    def _not_found(self, ref: Reference) -> NotFound:
        return NotFound(f"manifest for {ref.familiar} not found: manifest unknown")

    def _resolve_at(self, endpoint: Endpoint, ref: Reference) -> oci.Descriptor:
        path = f"/v2/{ref.path}/manifests/{ref.reference}"
        accept = {"Accept": MANIFEST_ACCEPT_HEADER}
        with self.request(endpoint, ref, PULL, "HEAD", path, headers=accept) as reply:
            if reply.status == 404:
                raise self._not_found(ref)
            media_type = reply.header("Content-Type").split(";")[0].strip()
            digest = reply.header("Docker-Content-Digest") or ref.digest or ""
            length = reply.header("Content-Length")
            if reply.status == 200 and digest and length.isdigit() \
                    and media_type in oci.MANIFEST_TYPES | oci.INDEX_TYPES:
                self._check_digest(ref, digest)
                return oci.Descriptor(media_type, digest, int(length))
        data, media_type, digest = self._get_manifest(endpoint, ref, ref.reference)
        self._check_digest(ref, digest)
        return oci.Descriptor(media_type, digest, len(data))

    @staticmethod
    def _check_digest(ref: Reference, digest: str) -> None:
        if ref.digest is not None and digest != ref.digest:
            raise FailedPrecondition(
                f"manifest for {ref.familiar}: registry returned digest {digest}")
        validate_digest(digest)

    def _get_manifest(self, endpoint: Endpoint, repo: Reference,
                      target: str) -> tuple[bytes, str, str]:
        """(body, media type, computed digest); the registry's digest header must agree."""
        path = f"/v2/{repo.path}/manifests/{target}"
        with self.request(endpoint, repo, PULL, "GET", path,
                          headers={"Accept": MANIFEST_ACCEPT_HEADER}) as reply:
            if reply.status == 404:
                raise self._not_found(repo if target == repo.reference else
                                      repo.with_digest(target) if target.startswith("sha256:")
                                      else repo.with_tag(target))
            raise_for_status(reply, 200)
            length = reply.header("Content-Length")
            if length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                raise InvalidArgument(f"manifest of {repo.name} is larger than "
                                      f"{MAX_MANIFEST_SIZE} bytes")
            data = reply.read(MAX_MANIFEST_SIZE)
            header_digest = reply.header("Docker-Content-Digest")
            media_type = reply.header("Content-Type").split(";")[0].strip()
        digest = _digest_of(data)
        if header_digest and header_digest != digest:
            raise FailedPrecondition(f"manifest of {repo.name}: content digest {digest} differs "
                                     f"from the registry's Docker-Content-Digest {header_digest}")
        if media_type not in oci.MANIFEST_TYPES | oci.INDEX_TYPES:
            media_type = oci.sniff_media_type(data)
        return data, media_type, digest

    def fetch_manifest(self, ref: Reference | str, desc: oci.Descriptor | None = None) -> bytes:
        """The manifest (or index) bytes, verified: against ``desc`` (size and digest) when given,
        else against the reference's digest, else against the registry's digest header.

        Raises NotFound, Unauthorized, Unavailable, FailedPrecondition (verification failed).
        """
        ref = as_reference(ref, None if desc is not None else "latest")
        target = desc.digest if desc is not None else ref.reference

        def at(endpoint: Endpoint) -> bytes:
            data, _, digest = self._get_manifest(endpoint, ref, target)
            want = desc.digest if desc is not None else ref.digest
            if want is not None and digest != want:
                raise FailedPrecondition(
                    f"manifest {want} of {ref.name}: received content has digest {digest}")
            if desc is not None and len(data) != desc.size:
                raise FailedPrecondition(f"manifest {desc.digest} of {ref.name}: received "
                                         f"{len(data)} bytes, expected {desc.size}")
            return data

        return self.each_endpoint(ref, at)

    # --- blobs (see fetch.py and push.py) -------------------------------------------------

    def fetch_blob_into(self, repo: Reference | str, desc: oci.Descriptor,
                        store: _fetch.BlobStore, reporter: Reporter = discard) -> bool:
        """Download one blob into ``store`` (resuming, verified, deduplicated); see
        ``fetch.fetch_blob_into``. Returns False when the blob was already there."""
        return _fetch.fetch_blob_into(self, as_reference(repo), desc, store, reporter)

    def fetch_all(self, repo: Reference | str, descs: Sequence[oci.Descriptor],
                  store: _fetch.BlobStore, reporter: Reporter = discard,
                  max_workers: int = 3) -> list[bool]:
        """``fetch_blob_into`` for each descriptor, ``max_workers`` at a time."""
        return _fetch.fetch_all(self, as_reference(repo), descs, store, reporter=reporter,
                                max_workers=max_workers)

    def fetch_blob(self, repo: Reference | str, desc: oci.Descriptor, limit: int = 16 << 20) \
            -> bytes:
        """A small blob (an image config) into memory, verified. Raises as ``fetch_manifest``."""
        return _fetch.fetch_blob(self, as_reference(repo), desc, limit)

    def push_blob(self, repo: Reference | str, desc: oci.Descriptor, provider: Provider,
                  reporter: Reporter = discard,
                  mount_from: Sequence[Reference | str] = ()) -> str:
        """Upload one blob from ``provider`` unless the registry has it; see ``push.push_blob``.
        Returns "exists", "mounted" or "uploaded"."""
        return _push.push_blob(self, as_reference(repo), desc, provider, reporter=reporter,
                               mount_from=[as_reference(m) for m in mount_from])

    def push_manifest(self, repo: Reference | str, tag_or_digest: str, media_type: str,
                      data: bytes) -> str:
        """PUT a manifest or index under a tag (or its digest); returns its digest."""
        return _push.push_manifest(self, as_reference(repo), tag_or_digest, media_type, data)
