"""Blob and manifest upload (the push half of the distribution API).

What it is for: ``push_blob`` gets one blob from the content store to a repository in the
cheapest way the registry allows, in Docker's order:

1. ``HEAD /v2/<name>/blobs/<digest>``: already there -> ``LAYER_EXISTS``;
2. cross-repository mount from each candidate repository on the same registry
   (``POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>``): 201 -> ``MOUNTED``; a 202
   means "no, but here is an upload session", which step 3 then uses;
3. upload: one ``PUT <location>?digest=`` with the whole blob when it is at most the client's
   ``monolithic_limit``, else ``PATCH`` chunks of ``chunk_size`` with ``Content-Range`` and a
   final empty ``PUT ?digest=``. Each answer's ``Location`` (relative or absolute, carrying the
   upload's state) is where the next request goes.

``push_manifest`` PUTs a manifest or index under a tag or digest after its blobs are there.

What it must never do: upload to a mirror (``RegistryHosts.push_endpoint``), send a blob other
than the one the descriptor names (the registry verifies the digest; we verify the size we read),
or retry a PATCH blindly (a chunk may have been partly accepted): after a failed PATCH the
upload's status (``GET <location>``, its ``Range``) says where to go on from.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydeskd.containerd import oci
from pydeskd.containerd.content import Provider
from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument, Unavailable
from pydeskd.containerd.progress import Event, Reporter, Status
from pydeskd.containerd.reference import Reference
from pydeskd.containerd.registry.auth import repository_scope
from pydeskd.containerd.registry.hosts import Endpoint
from pydeskd.containerd.registry.transport import Reply, raise_for_status

if TYPE_CHECKING:
    from pydeskd.containerd.registry.client import RegistryClient

PUSH = ("pull", "push")
# A chunk whose PATCH failed (connection lost, 5xx) is resumed from the registry's upload status
# this many times in a row before the push fails.
MAX_CHUNK_FAILURES = 3
EXISTS, MOUNTED, UPLOADED = "exists", "mounted", "uploaded"


def _location(reply: Reply) -> str:
    location = reply.header("Location")
    if not location:
        raise InvalidArgument(f"registry answered {reply.method} {reply.url.split('?')[0]} "
                              "without an upload Location")
    return urllib.parse.urljoin(reply.url, location)


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class _Upload:
    """One blob's push to one repository: the endpoint, the descriptor and where to report."""

    def __init__(self, client: RegistryClient, repo: Reference, desc: oci.Descriptor,
                 provider: Provider, reporter: Reporter) -> None:
        self.client, self.repo, self.desc = client, repo, desc
        self.provider, self.reporter = provider, reporter
        self.endpoint: Endpoint = client.hosts.push_endpoint(repo.domain)

    def report(self, status: Status, current: int = 0, detail: str = "") -> None:
        self.reporter(Event(self.desc.digest, status, current, self.desc.size, detail))

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                body: bytes | None = None, retry: bool = True,
                extra_scopes: Sequence[str] = ()) -> Reply:
        return self.client.request(self.endpoint, self.repo, PUSH, method, url, headers=headers,
                                   body=body, retry=retry, extra_scopes=extra_scopes)

    def exists(self) -> bool:
        with self.request("HEAD", f"/v2/{self.repo.path}/blobs/{self.desc.digest}") as reply:
            if reply.status == 404:
                return False
            raise_for_status(reply, 200)
            return True

    def mount(self, sources: Sequence[Reference]) -> str | None:
        """Try each source; returns MOUNTED, or the upload session a refusing registry opened,
        or None when no source was worth trying."""
        for source in sources:
            if source.domain != self.repo.domain or source.path == self.repo.path:
                continue
            url = self.endpoint.url(f"/v2/{self.repo.path}/blobs/uploads/") + "?" + \
                urllib.parse.urlencode({"mount": self.desc.digest, "from": source.path})
            with self.request("POST", url, headers={"Content-Length": "0"}, body=b"",
                              extra_scopes=[repository_scope(source.path, "pull")]) as reply:
                if reply.status == 201:
                    self.report(Status.MOUNTED, detail=source.familiar_name)
                    return MOUNTED
                raise_for_status(reply, 202)
                # The registry declined the mount but started an upload: use it.
                return _location(reply)
        return None

    def start(self) -> str:
        with self.request("POST", f"/v2/{self.repo.path}/blobs/uploads/",
                          headers={"Content-Length": "0"}, body=b"") as reply:
            raise_for_status(reply, 202)
            return _location(reply)

    def read(self, offset: int, n: int) -> bytes:
        with self.provider.reader_at(self.desc.digest) as reader:
            if reader.size != self.desc.size:
                raise FailedPrecondition(
                    f"blob {self.desc.digest} has {reader.size} bytes in the store, the "
                    f"descriptor says {self.desc.size}")
            data = reader.read_at(offset, n)
        if len(data) != n:
            raise FailedPrecondition(f"blob {self.desc.digest}: short read at {offset}")
        return data

    def finish(self, session: str, body: bytes) -> None:
        url = _with_query(session, digest=self.desc.digest)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(body))}
        with self.request("PUT", url, headers=headers, body=body) as reply:
            raise_for_status(reply, 201, 204)
            returned = reply.header("Docker-Content-Digest")
        if returned and returned != self.desc.digest:
            raise FailedPrecondition(f"registry stored {self.desc.digest} as {returned}")

    def chunked(self, session: str) -> None:
        offset, size = 0, self.desc.size
        failures = 0
        while offset < size:
            n = min(self.client.chunk_size, size - offset)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(n),
                       "Content-Range": f"{offset}-{offset + n - 1}"}
            try:
                # Not retried blindly: the registry may have taken the chunk (or part of it).
                with self.request("PATCH", session, headers=headers,
                                  body=self.read(offset, n), retry=False) as reply:
                    raise_for_status(reply, 202)
                    session = _location(reply)
            except Unavailable:
                failures += 1
                if failures > MAX_CHUNK_FAILURES:
                    raise
                self.client.sleep(self.client.transport.backoff * 2 ** (failures - 1))
                # Ask the registry how much it has, and go on from there.
                session, offset = self.upload_status(session)
                continue
            failures = 0
            offset += n
            self.report(Status.PUSHING, offset)
        self.finish(session, b"")

    def upload_status(self, session: str) -> tuple[str, int]:
        """(the session's next URL, bytes the registry holds) from ``GET <session>``."""
        with self.request("GET", session) as reply:
            raise_for_status(reply, 204)
            match = re.fullmatch(r"(?:bytes=)?0-(\d+)", reply.header("Range").strip())
            location = _location(reply) if reply.header("Location") else session
        if match is None:
            return location, 0
        # distribution answers "0-0" for an empty upload too: chunks are never 1 byte long.
        end = int(match.group(1))
        return location, end + 1 if end > 0 else 0


def push_blob(client: RegistryClient, repo: Reference, desc: oci.Descriptor,
              provider: Provider, *, reporter: Reporter,
              mount_from: Sequence[Reference]) -> str:
    """Make ``desc`` present in ``repo``; returns ``EXISTS``, ``MOUNTED`` or ``UPLOADED``.

    ``mount_from``: repositories that hold the blob (only those on ``repo``'s registry are
    tried). Raises Unauthorized, Unavailable, NotFound (not in ``provider``), InvalidArgument
    (the registry refused the upload, e.g. a digest mismatch).
    """
    upload = _Upload(client, repo, desc, provider, reporter)
    if upload.exists():
        upload.report(Status.LAYER_EXISTS)
        return EXISTS
    session = upload.mount(mount_from)
    if session == MOUNTED:
        return MOUNTED
    if session is None:
        session = upload.start()
    upload.report(Status.PUSHING, 0)
    if desc.size <= client.monolithic_limit:
        upload.finish(session, upload.read(0, desc.size))
    else:
        upload.chunked(session)
    upload.report(Status.PUSHED, desc.size)
    return UPLOADED


def push_manifest(client: RegistryClient, repo: Reference, tag_or_digest: str,
                  media_type: str, data: bytes) -> str:
    """PUT ``data`` as ``/v2/<name>/manifests/<tag_or_digest>``; returns its digest.

    Raises InvalidArgument (refused, e.g. MANIFEST_BLOB_UNKNOWN), Unauthorized, Unavailable,
    FailedPrecondition (the registry computed another digest).
    """
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if tag_or_digest.startswith("sha256:") and tag_or_digest != digest:
        raise InvalidArgument(f"manifest digest is {digest}, not {tag_or_digest}")
    endpoint = client.hosts.push_endpoint(repo.domain)
    path = f"/v2/{repo.path}/manifests/{tag_or_digest}"
    with client.request(endpoint, repo, PUSH, "PUT", path,
                        headers={"Content-Type": media_type}, body=data) as reply:
        raise_for_status(reply, 200, 201)
        returned = reply.header("Docker-Content-Digest")
    if returned and returned != digest:
        raise FailedPrecondition(f"registry stored the manifest as {returned}, not {digest}")
    return digest
