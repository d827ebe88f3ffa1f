"""OCI image layouts (image-spec ``image-layout.md``), as directories and as tars, both ways.

What it is for: exchanging images with OCI tools (skopeo ``oci:``, umoci, BuildKit's
``--output type=oci``). An export writes ``oci-layout``, ``index.json`` (one entry per image
record, named with ``io.containerd.image.name`` and the tag in
``org.opencontainers.image.ref.name``) and ``blobs/sha256``; an import creates one image per
``index.json`` entry (unnamed when the entry carries only a bare tag).

What it must never do: follow a link inside a layout directory (blobs are opened with
``O_NOFOLLOW`` and must be regular files), write into a non-empty directory, or commit
anything from a layout that fails verification.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

from pydeskd.containerd import oci
from pydeskd.containerd.content import Provider, Store
from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.imageio._archive import Archive, spool_layout_dir, spool_tar
from pydeskd.containerd.imageio._load import CommitContext, LoadedImage, commit_plan, plan_oci
from pydeskd.containerd.imageio._write import DirSink, TarSink, plan_export, write_layout
from pydeskd.containerd.images import Image

__all__ = ["export_dir", "export_tar", "import_dir", "import_tar"]


def export_dir(root: Path, provider: Provider, images: Sequence[Image],
               platform: oci.Platform | None = None) -> None:
    """Write ``images`` as an OCI layout in ``root`` (created; must be empty if it exists)."""
    plan = plan_export(provider, images, platform, docker=False)
    write_layout(DirSink(root), provider, plan)


def export_tar(out: IO[bytes], provider: Provider, images: Sequence[Image],
               platform: oci.Platform | None = None) -> None:
    """Write ``images`` as a tar of an OCI layout (no Docker ``manifest.json``)."""
    plan = plan_export(provider, images, platform, docker=False)
    sink = TarSink(out)
    write_layout(sink, provider, plan)
    sink.close()


def _import(archive: Archive, ctx: CommitContext,
            platform: oci.Platform | None) -> list[LoadedImage]:
    if archive.get("index.json") is None or archive.get("oci-layout") is None:
        raise InvalidArgument("not an OCI image layout: oci-layout or index.json is missing")
    matcher = oci.PlatformMatcher(platform) if platform is not None else None
    return commit_plan(archive, plan_oci(archive, matcher), ctx)


def import_dir(root: Path, content: Store, ctx: CommitContext,
               platform: oci.Platform | None = None) -> list[LoadedImage]:
    """Import every image of the layout directory ``root`` (only ``platform``'s content if
    given). Raises InvalidArgument, NotFound (nothing for ``platform``)."""
    with Archive(content) as archive:
        spool_layout_dir(root, archive)
        return _import(archive, ctx, platform)


def import_tar(stream: IO[bytes], content: Store, ctx: CommitContext,
               platform: oci.Platform | None = None) -> list[LoadedImage]:
    """Import every image of an OCI layout tar (only ``platform``'s content if given).
    Raises InvalidArgument, NotFound (nothing for ``platform``)."""
    with Archive(content) as archive:
        spool_tar(stream, archive)
        return _import(archive, ctx, platform)
