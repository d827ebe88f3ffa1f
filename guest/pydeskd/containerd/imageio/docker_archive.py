"""``docker save`` and ``docker load``: the tar format of Docker 25+, and loading older ones.

What it is for: ``save`` writes what Docker 25 and later write -- an OCI image layout
(``oci-layout``, ``index.json`` naming each image with ``io.containerd.image.name`` and
``org.opencontainers.image.ref.name``, ``blobs/sha256/...``) plus ``manifest.json`` and
``repositories``, which older engines (Docker 20.10's ``image/tarexport``) read instead.
``load`` reads that format, the pre-25 format (``<id>/layer.tar``, ``<id>.json``,
``manifest.json``), and plain OCI layout tars, verifying everything before committing anything.

Platforms: ``save`` with a platform writes that platform's manifest only (the index is kept
as the target, so the image ID survives the round trip); without one it writes every platform
present in the store. In ``manifest.json`` the tags go on the entry of the platform that best
matches the host (older engines load one image per tag).

What it must never do: write an archive from a corrupt blob, or let a hostile archive write a
file or commit a blob (see ``imageio._archive``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

from pydeskd.containerd import oci
from pydeskd.containerd.content import Provider, Store
from pydeskd.containerd.imageio._archive import Archive, spool_tar
from pydeskd.containerd.imageio._load import CommitContext, LoadedImage, commit_plan, plan_archive
from pydeskd.containerd.imageio._write import TarSink, plan_export, write_layout
from pydeskd.containerd.images import Image

__all__ = ["CommitContext", "LoadedImage", "load", "save"]


def save(out: IO[bytes], provider: Provider, images: Sequence[Image],
         platform: oci.Platform | None = None) -> None:
    """Write ``images`` (records: a named record becomes a tag, an unnamed one none) as a
    ``docker save`` tar to ``out``.

    Raises NotFound (a blob or the platform is missing), InvalidArgument (no image),
    FailedPrecondition (a blob in the store does not match its digest).
    """
    plan = plan_export(provider, images, platform, docker=True)
    sink = TarSink(out)
    write_layout(sink, provider, plan)
    sink.close()


def load(stream: IO[bytes], content: Store, ctx: CommitContext,
         platform: oci.Platform | None = None) -> list[LoadedImage]:
    """Load a ``docker save`` tar (any Docker version) or an OCI layout tar from ``stream``.

    ``platform`` (``docker load --platform``): load only that platform's content of each
    image. Emits ``Loading layer`` progress per layer to ``ctx.reporter``. Raises
    InvalidArgument for a malformed or hostile archive, NotFound when nothing in it is for
    ``platform`` (nothing is committed then).
    """
    matcher = oci.PlatformMatcher(platform) if platform is not None else None
    with Archive(content) as archive:
        spool_tar(stream, archive)
        plan = plan_archive(archive, archive.add_synthetic, matcher)
        return commit_plan(archive, plan, ctx)
