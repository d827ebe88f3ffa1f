"""Reading an image's documents from the content store: blobs checked against descriptors,
the platform's manifest and config of an index, what is present, how big it is.

What it is for: the image store, save/load, GC, the unpacker and the daemon all go from an
image record's target (an index or a manifest) to the manifest and config of one platform;
they do it here, the same way (containerd's ``images.Manifest`` with a platform matcher).

What it must never do: read a document without checking its size and digest, read more than
``MAX_MANIFEST_SIZE`` of one into memory, or write anything.
"""

from __future__ import annotations

import hashlib

from pydeskd.containerd import oci
from pydeskd.containerd.content import Provider
from pydeskd.containerd.errors import FailedPrecondition, InvalidArgument, NotFound

# Manifests and indexes are small; a multi-megabyte "manifest" is an attack on memory.
MAX_MANIFEST_SIZE = 8 << 20


def read_blob(provider: Provider, desc: oci.Descriptor, limit: int = MAX_MANIFEST_SIZE) -> bytes:
    """Read a small blob whole and check it against ``desc`` (size and digest).

    Raises NotFound, FailedPrecondition (size or digest mismatch), InvalidArgument (too big).
    """
    if desc.size > limit:
        raise InvalidArgument(f"blob {desc.digest} of {desc.size} bytes is too large")
    with provider.reader_at(desc.digest) as reader:
        data = reader.read_at(0, desc.size + 1)
    if len(data) != desc.size:
        raise FailedPrecondition(
            f"blob {desc.digest}: size {len(data)} does not match descriptor size {desc.size}")
    if "sha256:" + hashlib.sha256(data).hexdigest() != desc.digest:
        raise FailedPrecondition(f"blob {desc.digest}: content does not match its digest")
    return data


def image_manifests(
    provider: Provider, target: oci.Descriptor, matcher: oci.PlatformMatcher | None = None,
) -> tuple[oci.Descriptor, oci.Manifest, oci.ImageConfig]:
    """The manifest (and its config) of ``target`` for ``matcher``'s platform.

    An index picks its best entry (``Index.select``); a single manifest must match the platform
    in its config. With no matcher, an index picks the host's platform. Raises NotFound (no
    platform match, a missing blob), InvalidArgument (a malformed document).
    """
    desc = target
    for _ in range(8):  # nested indexes are legal, a loop of them is not possible (digests)
        data = read_blob(provider, desc)
        media_type = desc.media_type or oci.sniff_media_type(data)
        if media_type in oci.INDEX_TYPES:
            index = oci.Index.parse(data, media_type)
            try:
                desc = index.select(matcher or oci.PlatformMatcher(oci.Platform.host()))
            except InvalidArgument as e:
                raise NotFound(str(e)) from None
            continue
        manifest = oci.Manifest.parse(data, media_type)
        config = oci.ImageConfig.parse(read_blob(provider, manifest.config))
        if matcher is not None and not matcher.matches(config.platform):
            raise NotFound(f"image {target.digest} is {config.platform}, not {matcher.wanted}:"
                           " no match for platform in manifest")
        return desc, manifest, config
    raise InvalidArgument(f"image {target.digest}: indexes nested too deeply")


def available_manifests(provider: Provider, target: oci.Descriptor) -> list[oci.Descriptor]:
    """The platform manifests of ``target`` whose manifest blob is in the store (a pull of one
    platform leaves the other entries of an index absent). Attestations are left out."""
    data = read_blob(provider, target)
    media_type = target.media_type or oci.sniff_media_type(data)
    if media_type not in oci.INDEX_TYPES:
        return [target]
    out: list[oci.Descriptor] = []
    for entry in oci.Index.parse(data, media_type).manifests:
        if entry.is_attestation:
            continue
        try:
            out.extend(available_manifests(provider, entry))
        except NotFound:
            continue
    return out


def content_size(provider: Provider, target: oci.Descriptor) -> int:
    """Bytes of the blobs of ``target`` that are in the store (index, manifests, configs,
    layers; each blob once): what ``docker images``/``system df`` report as content size.
    Absent platforms and layers are not counted."""
    seen: set[str] = set()
    total = 0
    stack = [target]
    while stack:
        desc = stack.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        try:
            with provider.reader_at(desc.digest) as reader:
                size = reader.size
        except NotFound:
            continue
        total += size
        media_type = desc.media_type
        if media_type and media_type not in oci.INDEX_TYPES | oci.MANIFEST_TYPES:
            continue
        try:
            data = read_blob(provider, desc)
            media_type = media_type or oci.sniff_media_type(data)
            if media_type in oci.INDEX_TYPES:
                stack.extend(oci.Index.parse(data, media_type).manifests)
            elif media_type in oci.MANIFEST_TYPES:
                manifest = oci.Manifest.parse(data, media_type)
                stack.append(manifest.config)
                stack.extend(manifest.layers)
        except (InvalidArgument, FailedPrecondition):
            continue  # an unreadable document counts as its own bytes only
    return total
