"""``scripts/build-vm-image``: build, push or pull the guest image from a shell.

What it is for: a thin command line over ``image`` and ``imageregistry`` (the ``pydesk vm image``
CLI group is the user-facing one); it prints progress on stderr and the image directory on
stdout. What it must never do: hold logic of its own.
"""

from __future__ import annotations

import argparse
import sys
import time

from pydesk.vm.image import ImageBuildError, RecipeError, ensure_image


def _progress(message: str) -> None:
    print(f"build-vm-image: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build-vm-image", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--push", metavar="REF", help="push the built image to REF")
    group.add_argument("--pull", metavar="REF", help="pull REF into the cache (no build)")
    parser.add_argument("--arch", metavar="ARCH", default=None,
                        help="guest architecture, Debian's name: amd64 or arm64 (default: this "
                             "machine's; another one is built through qemu-user-static)")
    parser.add_argument("--insecure", action="store_true",
                        help="plain HTTP to the registry (a local test registry)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.pull:
            from pydesk.vm.imageregistry import pull_image
            directory = pull_image(args.pull, insecure=args.insecure, progress=_progress)
        else:
            directory = ensure_image(_progress, args.arch)
            if args.push:
                from pydesk.vm.imageregistry import push_image
                digest = push_image(directory, args.push, insecure=args.insecure,
                                    progress=_progress)
                _progress(f"pushed {args.push}@{digest}")
    except (ImageBuildError, RecipeError) as e:
        print(f"build-vm-image: error: {e}", file=sys.stderr)
        return 1
    _progress(f"done in {time.monotonic() - started:.1f}s")
    print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
