"""``pydesk-ctr``: a command line onto the image service, for debugging and for scripts (what
containerd's ``ctr`` is to containerd). Users of Docker will use ``docker`` against pydeskd.

    pydesk-ctr [--root DIR] pull [--platform linux/arm64] [--user U[:P]] REF
    pydesk-ctr images                   (list: name, ID, platform manifest, size)
    pydesk-ctr tag SOURCE TARGET | rmi [-f] NAME|ID... | prune [-a]
    pydesk-ctr push [--user U[:P]] NAME
    pydesk-ctr save -o FILE NAME... | load -i FILE | import FILE [NAME] [--change 'CMD ...']
    pydesk-ctr mount NAME DIR | umount DIR   (a read-only view of the unpacked image)

What it must never do: print a credential, or leave a mount behind on error.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydeskd.containerd import oci
from pydeskd.containerd.errors import ContainerdError
from pydeskd.containerd.images import available_manifests, read_blob, short_id
from pydeskd.containerd.progress import Event, Status
from pydeskd.containerd.registry import Credentials, RegistryHosts, as_reference
from pydeskd.containerd.service import ImageService
from pydeskd.containerd.snapshots import mount as mounts

DEFAULT_ROOT = Path("/var/lib/pydesk/images")
_SHOWN = {Status.DOWNLOAD_COMPLETE, Status.PULL_COMPLETE, Status.ALREADY_EXISTS,
          Status.PUSHED, Status.MOUNTED, Status.LAYER_EXISTS, Status.LOADING}


_reported: set[tuple[str, Status]] = set()


def _report(event: Event) -> None:
    # A layer is "Already exists" both for its download and its unpack: say it once.
    if event.status in _SHOWN and (event.digest, event.status) not in _reported:
        _reported.add((event.digest, event.status))
        detail = f" {event.detail}" if event.detail else ""
        print(f"{event.id}: {event.status.value}{detail}", file=sys.stderr)


def _credentials(user: str | None, ref: str) -> Credentials | None:
    """``--user`` for the registry of ``ref`` only (never sent to a mirror)."""
    if not user:
        return None
    name, _, password = user.partition(":")
    return Credentials(name, password or getpass.getpass(f"Password for {name}: "),
                       server_address=as_reference(ref).registry_host)


def _size(svc: ImageService, digests: Sequence[str]) -> int:
    total = 0
    for digest in digests:
        with contextlib.suppress(ContainerdError):
            total += svc.stores.content.info(digest).size
    return total


def _images(svc: ImageService) -> None:
    """One line per image and platform present (a pull of one platform of an index stores
    only that one)."""
    print(f"{'REPOSITORY:TAG':50} {'IMAGE ID':14} {'PLATFORM':14} SIZE")
    for image in svc.list():
        try:
            present = available_manifests(svc.stores.content, image.target)
        except ContainerdError:
            present = []
        for desc in present or [image.target]:
            try:
                manifest = oci.Manifest.parse(read_blob(svc.stores.content, desc),
                                              desc.media_type)
                config = oci.ImageConfig.parse(read_blob(svc.stores.content, manifest.config))
                platform = str(config.platform)
                size = _size(svc, [m.digest for m in manifest.layers])
            except ContainerdError:
                platform, size = "-", 0
            print(f"{image.familiar:50} {short_id(image.id):14} {platform:14} "
                  f"{size / 1e6:.1f} MB")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pydesk-ctr", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path(os.environ.get("PYDESK_IMAGE_ROOT",
                                                                    DEFAULT_ROOT)),
                   help="image store root (default %(default)s, or $PYDESK_IMAGE_ROOT)")
    p.add_argument("--mirror", action="append", default=[], help="registry mirror for docker.io")
    p.add_argument("--insecure", action="append", default=[],
                   help="plain-HTTP registry host[:port] or CIDR")
    sub = p.add_subparsers(dest="command", required=True)
    pull = sub.add_parser("pull", help="pull an image (and unpack it)")
    pull.add_argument("ref")
    pull.add_argument("--platform", help="os/arch[/variant], default the host's")
    pull.add_argument("--user", help="USER[:PASSWORD] for the registry")
    push = sub.add_parser("push", help="push an image to its registry")
    push.add_argument("ref")
    push.add_argument("--platform")
    push.add_argument("--user")
    sub.add_parser("images", help="list images")
    tag = sub.add_parser("tag", help="name an image")
    tag.add_argument("source")
    tag.add_argument("target")
    rmi = sub.add_parser("rmi", help="remove images (and what only they used)")
    rmi.add_argument("-f", "--force", action="store_true")
    rmi.add_argument("names", nargs="+")
    prune = sub.add_parser("prune", help="remove dangling images (-a: all) and unused data")
    prune.add_argument("-a", "--all", action="store_true")
    save = sub.add_parser("save", help="write images as a docker save tar")
    save.add_argument("-o", "--output", required=True, type=Path)
    save.add_argument("names", nargs="+")
    load = sub.add_parser("load", help="load a docker save tar or an OCI layout tar")
    load.add_argument("-i", "--input", required=True, type=Path)
    imp = sub.add_parser("import", help="import a root filesystem tar as an image")
    imp.add_argument("file", type=Path)
    imp.add_argument("name", nargs="?")
    imp.add_argument("-c", "--change", action="append", default=[])
    mnt = sub.add_parser("mount", help="mount a read-only view of an image at DIR")
    mnt.add_argument("name")
    mnt.add_argument("target", type=Path)
    mnt.add_argument("--platform", help="os/arch[/variant], default the host's")
    umnt = sub.add_parser("umount", help="undo a mount")
    umnt.add_argument("target", type=Path)
    return p


def run(args: argparse.Namespace) -> int:
    hosts = RegistryHosts(tuple(args.mirror), tuple(args.insecure))
    with ImageService(args.root, hosts) as svc:
        if args.command == "pull":
            platform = oci.Platform.parse(args.platform) if args.platform else None
            result = svc.pull(args.ref, platform=platform, reporter=_report,
                              credentials=_credentials(args.user, args.ref))
            print(f"Digest: {result.target.digest}")
            status = "Downloaded newer image" if result.downloaded else "Image is up to date"
            print(f"Status: {status} for {result.reference.familiar}")
        elif args.command == "push":
            platform = oci.Platform.parse(args.platform) if args.platform else None
            pushed = svc.push(args.ref, platform=platform, reporter=_report,
                              credentials=_credentials(args.user, args.ref))
            print(f"digest: {pushed.digest} size: {pushed.size}")
        elif args.command == "images":
            _images(svc)
        elif args.command == "tag":
            svc.tag(args.source, args.target)
        elif args.command == "rmi":
            for name in args.names:
                for item in svc.remove(name, force=args.force):
                    print(f"Untagged: {item.untagged}" if item.untagged
                          else f"Deleted: {item.deleted}")
        elif args.command == "prune":
            deleted, gc = svc.prune(unused=args.all)
            for item in deleted:
                print(f"Deleted: {item.deleted}" if item.deleted else f"Untagged: {item.untagged}")
            print(f"Total reclaimed space: {gc.bytes_reclaimed / 1e6:.1f} MB")
        elif args.command == "save":
            with args.output.open("wb") as out:
                svc.save(out, args.names)
        elif args.command == "load":
            with args.input.open("rb") as stream:
                for loaded in svc.load(stream, reporter=_report):
                    print(loaded.message)
        elif args.command == "import":
            with args.file.open("rb") as stream:
                print(svc.import_rootfs(stream, name=args.name, changes=args.change).id)
        elif args.command == "mount":
            image = svc.resolve(args.name)
            chain = svc.unpack(image.target, oci.Platform.parse(args.platform)
                               if args.platform else None)
            key = f"ctr-mount-{args.target.resolve()}"
            view = svc.stores.snapshotter.view(key, chain)
            try:
                mounts.perform(view, args.target)
            except BaseException:
                svc.stores.snapshotter.remove(key)
                raise
            print(f"{args.target}: {args.name} mounted read-only; undo with: pydesk-ctr umount "
                  f"{args.target}")
        elif args.command == "umount":
            mounts.unmount(args.target)
            svc.stores.snapshotter.remove(f"ctr-mount-{args.target.resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except ContainerdError as e:
        print(f"pydesk-ctr: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
