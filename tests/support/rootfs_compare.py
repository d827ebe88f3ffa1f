"""Root filesystem comparison, and the reference unpack (skopeo + umoci) to compare against.

What it is for: the image acceptance test pulls and unpacks an image with pydesk, has the same
image unpacked by the reference tools (``skopeo copy`` to an OCI layout, ``umoci unpack``), and
compares the two trees: ``tree_snapshot`` records the facts that matter for each path (type,
mode with setuid/setgid/sticky, owner, size, content hash, link target, device numbers, user. and
trusted. xattrs, optionally mtimes and hardlink groups), ``diff_trees`` lists the differences as
readable lines (empty: identical).

umoci 0.4.7 reads only OCI manifests with gzip or plain layers: ``umoci_unpack`` first converts
anything else (Docker v2 media types, zstd layers) with ``skopeo copy --format oci
--dest-compress-format gzip`` into a scratch layout, which changes digests but not contents.

What it must never do: follow a symlink out of the tree it snapshots, or count overlayfs'
own bookkeeping (``trusted.overlay.*``/``user.overlay.*`` xattrs) as image content.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from pydeskd.containerd.oci import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    Manifest,
)
from tests.support.images import ImageLayout
from tests.support.registry import SKOPEO, dir_transport_copy, run_tool, skopeo_auth_args

UMOCI = "umoci"
XATTR_PREFIXES = ("user.", "trusted.")
OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")

_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
          (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
          (stat.S_ISSOCK, "socket"))


@dataclass(frozen=True)
class EntryFacts:
    kind: str  # file, dir, symlink, char, block, fifo, socket
    mode: int  # permission bits with setuid/setgid/sticky (stat.S_IMODE)
    uid: int
    gid: int
    size: int | None = None  # regular files
    sha256: str | None = None  # regular files
    link_target: str | None = None  # symlinks
    rdev: tuple[int, int] | None = None  # devices: (major, minor)
    xattrs: tuple[tuple[str, bytes], ...] = ()  # sorted
    mtime: int | None = None  # only with mtime=True
    hardlinks: tuple[str, ...] | None = None  # with hardlinks=True: every path of the inode


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "unknown"


def _xattrs(path: str, prefixes: Sequence[str]) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        if name.startswith(tuple(prefixes)) and not name.startswith(OVERLAY_XATTRS):
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
    return tuple(out)


def _hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_snapshot(root: Path, *, mtime: bool = False, hardlinks: bool = False,
                  xattr_prefixes: Sequence[str] = XATTR_PREFIXES) -> dict[str, EntryFacts]:
    """Facts about every path under ``root`` (``root`` itself excluded), by relative path."""
    facts: dict[str, EntryFacts] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root, rel_dir)) as it:
            for entry in it:
                rel = os.path.join(rel_dir, entry.name)
                st = entry.stat(follow_symlinks=False)
                kind = _kind(st.st_mode)
                fact = EntryFacts(
                    kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                    size=st.st_size if kind == "file" else None,
                    sha256=_hash(entry.path) if kind == "file" else None,
                    link_target=os.readlink(entry.path) if kind == "symlink" else None,
                    rdev=(os.major(st.st_rdev), os.minor(st.st_rdev))
                    if kind in ("char", "block") else None,
                    xattrs=_xattrs(entry.path, xattr_prefixes),
                    mtime=int(st.st_mtime) if mtime else None)
                facts[rel] = fact
                if kind == "dir":
                    stack.append(rel)
                elif hardlinks and st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    for paths in inodes.values():
        group = tuple(sorted(paths))
        for path in group:
            old = facts[path]
            facts[path] = EntryFacts(**{**{f.name: getattr(old, f.name) for f in fields(old)},
                                        "hardlinks": group})
    return dict(sorted(facts.items()))


def _show(name: str, value: object) -> str:
    return f"{value:#o}" if name == "mode" and isinstance(value, int) else repr(value)


def diff_trees(a: Mapping[str, EntryFacts], b: Mapping[str, EntryFacts],
               names: tuple[str, str] = ("a", "b")) -> list[str]:
    """Readable differences between two snapshots; empty when they are the same."""
    out = []
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            out.append(f"{path}: only in {names[0]} ({a[path].kind})")
        elif path not in a:
            out.append(f"{path}: only in {names[1]} ({b[path].kind})")
        elif a[path] != b[path]:
            for f in fields(EntryFacts):
                va, vb = getattr(a[path], f.name), getattr(b[path], f.name)
                if va != vb:
                    out.append(f"{path}: {f.name} {names[0]}={_show(f.name, va)}"
                               f" {names[1]}={_show(f.name, vb)}")
    return out


def _umoci_can_read(layout: ImageLayout, tag: str) -> bool:
    top = layout.resolve(tag)
    if top.media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
        return False
    manifest = Manifest.parse(layout.read_blob(top.digest))
    return all(layer.media_type in (OCI_LAYER, OCI_LAYER_GZIP) for layer in manifest.layers)


def umoci_unpack(layout_dir: Path, tag: str, dest: Path) -> Path:
    """``umoci unpack --image LAYOUT:TAG DEST``; returns ``DEST/rootfs``. ``tag`` must name one
    manifest (umoci cannot choose from an index). Converts first what umoci cannot read."""
    layout = ImageLayout(layout_dir, create=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as scratch:
        if not _umoci_can_read(layout, tag):
            source = f"oci:{layout_dir}:{tag}"
            if layout.resolve(tag).media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
                source = "dir:" + str(dir_transport_copy(layout, tag, Path(scratch) / "dir"))
            converted = Path(scratch) / "oci"
            run_tool([SKOPEO, "--insecure-policy", "copy", "--format", "oci",
                      "--dest-compress-format", "gzip", source, f"oci:{converted}:{tag}"])
            layout_dir = converted
        run_tool([UMOCI, "unpack", "--image", f"{layout_dir}:{tag}", str(dest)])
    return dest / "rootfs"


def skopeo_to_layout(registry_ref: str, dest_layout: Path, *, tag: str = "latest",
                     creds: tuple[str, str] | None = None, all_platforms: bool = False,
                     platform: tuple[str, str, str] | None = None) -> Path:
    """``skopeo copy docker://REF oci:DEST:TAG`` over plain HTTP. With ``all_platforms``,
    the whole index with digests preserved; otherwise one image (``platform`` = (os, arch,
    variant), default the host's), converted to OCI media types where needed."""
    overrides = []
    if platform is not None:
        overrides = ["--override-os", platform[0], "--override-arch", platform[1]]
        overrides += ["--override-variant", platform[2]] if platform[2] else []
    mode = ["--all", "--preserve-digests"] if all_platforms else ["--format", "oci"]
    dest_layout.parent.mkdir(parents=True, exist_ok=True)
    run_tool([SKOPEO, "--insecure-policy", *overrides, "copy", *mode, "--src-tls-verify=false",
              *skopeo_auth_args(dest_layout.parent, "src-", creds),
              f"docker://{registry_ref}", f"oci:{dest_layout}:{tag}"])
    return dest_layout


def reference_rootfs(registry_ref: str, workdir: Path, *,
                     creds: tuple[str, str] | None = None,
                     platform: tuple[str, str, str] | None = None) -> Path:
    """What skopeo + umoci make of ``registry_ref``: the root filesystem to compare with."""
    layout = skopeo_to_layout(registry_ref, workdir / "layout", creds=creds, platform=platform)
    return umoci_unpack(layout, "latest", workdir / "bundle")
