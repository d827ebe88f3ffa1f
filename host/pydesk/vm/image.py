"""The guest image cache: find, build (two cached stages) and verify VM images.

What it is for: the host side asks ``ensure_image(progress)`` for a directory holding the three
image files and ``image.json`` (vmcontract names) for the current pydeskd sources; it is built
when missing. The cache (``$PYDESK_CACHE/vm-images`` or ``~/.cache/pydesk/vm-images``) holds

- ``base/<arch>-<base key>/``: stage 1 (tree, vmlinuz, initrd.img, base.json), slow, keyed by
  the recipe;
- ``images/<arch>-<image key>/``: stage 2, keyed by the base key, pydeskd's sources and version;
- ``debs/<arch>/``: debootstrap's package cache; ``tmp/``: builds in progress; ``.lock``.

Every build happens in ``tmp/`` and is renamed into place when complete, under a lock, so two
builds never race and a killed build leaves nothing that looks finished.

What it must never do: return a directory whose files do not match its ``image.json``, build
without root (it says so instead), or import a guest module but ``pydeskd.vmcontract``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydesk.vm import imagerecipe
from pydesk.vm.imagebase import ImageBuildError, Runner
from pydesk.vm.imagerecipe import Recipe, RecipeError
from pydeskd import vmcontract

Progress = Callable[[str], None]
LOCK_TIMEOUT = 3600.0
KEEP_IMAGES = 3
"""Images kept in the cache (most recently used first); older ones are removed after a build."""
KEEP_BASES = 2
IMAGE_FILES = (vmcontract.KERNEL_FILE, vmcontract.INITRD_FILE, vmcontract.ROOTFS_FILE)

__all__ = ["ImageBuildError", "ImageInfo", "RecipeError", "build_into", "build_lock", "cache_root",
           "ensure_image", "image_dir_for_current_sources", "prune", "read_image_info",
           "verify_image"]


def cache_root() -> Path:
    base = os.environ.get("PYDESK_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "pydesk"
    return root / "vm-images"


@dataclass(frozen=True)
class ImageInfo:
    """image.json (the vmcontract keys, plus the keys of this cache)."""

    contract: int
    arch: str
    recipe_hash: str
    image_key: str
    files: dict[str, str]
    kernel_version: str
    pydesk_version: str

    @staticmethod
    def parse(data: bytes) -> ImageInfo:
        """Raises ValueError (not image.json)."""
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("image.json is not an object")
        files = obj.get("files")
        if not isinstance(files, dict) or set(files) != set(IMAGE_FILES):
            raise ValueError(f"image.json must list the files {', '.join(IMAGE_FILES)}")
        try:
            return ImageInfo(int(obj["contract"]), str(obj["arch"]), str(obj["recipe_hash"]),
                             str(obj["image_key"]), {str(k): str(v) for k, v in files.items()},
                             str(obj["kernel_version"]), str(obj["pydesk_version"]))
        except KeyError as e:
            raise ValueError(f"image.json has no {e}") from None


@dataclass(frozen=True)
class Keys:
    arch: str
    recipe_hash: str
    base_key: str
    image_key: str
    version: str

    @property
    def base_name(self) -> str:
        return f"{self.arch}-{self.base_key[:16]}"

    @property
    def image_name(self) -> str:
        return f"{self.arch}-{self.image_key[:16]}"


def current_keys(recipe: Recipe | None = None, arch: str | None = None) -> Keys:
    """Raises RecipeError (no recipe: not a source checkout)."""
    recipe = recipe or imagerecipe.load_recipe()
    arch = arch or imagerecipe.host_arch()
    version = imagerecipe.pydesk_version()
    return Keys(arch, imagerecipe.recipe_hash(recipe), imagerecipe.base_key(recipe, arch),
                imagerecipe.image_key(recipe, arch, version), version)


def read_image_info(directory: Path) -> ImageInfo:
    """Raises FileNotFoundError, ValueError."""
    return ImageInfo.parse((directory / vmcontract.IMAGE_INFO_FILE).read_bytes())


def verify_image(directory: Path, *, digests: bool = False) -> ImageInfo:
    """image.json and the three files (present; with ``digests``, their sha256 too).
    Raises FileNotFoundError, ValueError (a file does not match)."""
    from pydesk.vm.imagebuild import sha256_file
    info = read_image_info(directory)
    if info.contract != vmcontract.CONTRACT_VERSION:
        raise ValueError(f"image for contract {info.contract}, this pydesk speaks "
                         f"{vmcontract.CONTRACT_VERSION}")
    for name, digest in info.files.items():
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        if digests and sha256_file(path) != digest:
            raise ValueError(f"{path} does not match image.json (sha256 {digest})")
    return info


def image_dir_for_current_sources(arch: str | None = None) -> Path | None:
    """The cached image for these sources and ``arch`` (Debian's name; default: this machine's),
    or None (not built, or no recipe)."""
    try:
        keys = current_keys(arch=arch)
    except RecipeError:
        return None
    directory = cache_root() / "images" / keys.image_name
    try:
        verify_image(directory)
    except (OSError, ValueError):
        return None
    return directory


@contextlib.contextmanager
def build_lock(progress: Progress, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """The cache's exclusive lock (flock), waiting up to ``timeout``. Raises ImageBuildError."""
    import fcntl  # POSIX only: builds happen on Linux; this module is imported everywhere
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    progress("waiting for another image build to finish")
                    told = True
                if time.monotonic() >= deadline:
                    raise ImageBuildError(f"another image build held {root / '.lock'} for "
                                          f"{timeout:.0f}s") from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


def prune(keep_images: int = KEEP_IMAGES, keep_bases: int = KEEP_BASES) -> list[Path]:
    """Under the build lock: remove leftovers of killed builds, and all but the most recently
    used images and bases (a running VM keeps its open files; a stopped one asks
    ``ensure_image`` again at its next start). Returns what was removed."""
    root = cache_root()
    removed = []
    for kind, keep in (("tmp", 0), ("images", keep_images), ("base", keep_bases)):
        try:
            dirs = [d for d in (root / kind).iterdir() if d.is_dir()]
        except FileNotFoundError:
            continue
        dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
        for old in dirs[keep:]:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def _touch(directory: Path) -> None:
    """Marks an image as used now (for ``prune``); a read-only cache is not an error."""
    with contextlib.suppress(OSError):
        os.utime(directory)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the VM image needs root (debootstrap, chroot): run "
            "`sudo scripts/build-vm-image`, or pull a built image with "
            "`pydesk vm image pull REF`")


def build_into(final: Path, build: Callable[[Path], object]) -> None:
    """``build(tmpdir)`` then rename it to ``final``; the temp directory never survives."""
    tmp_root = cache_root() / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=tmp_root))
    try:
        build(tmp)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an unverifiable leftover (e.g. a truncated pull)
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_base(recipe: Recipe, keys: Keys, run: Runner) -> Path:
    from pydesk.vm.imagebase import build_base
    base = cache_root() / "base" / keys.base_name
    if (base / "base.json").is_file():
        return base
    _require_root()
    started = time.monotonic()
    build_into(base, lambda tmp: build_base(recipe, keys.arch, tmp,
                                             cache_root() / "debs" / keys.arch, run))
    run.progress(f"base tree built in {time.monotonic() - started:.0f}s")
    return base


def ensure_image(progress: Progress = lambda _: None, arch: str | None = None) -> Path:
    """The image directory for the current sources, built when missing (needs root).
    ``arch``: Debian's name of the guest architecture (amd64, arm64); default this machine's.
    Another architecture than the builder's needs qemu-user-static (``imageforeign``).

    Raises ImageBuildError (not root, a step failed), RecipeError (no recipe, unknown arch)."""
    recipe = imagerecipe.load_recipe()
    if arch is not None:
        recipe.arch(arch)  # RecipeError for an architecture the recipe does not know
    keys = current_keys(recipe, arch)
    final = cache_root() / "images" / keys.image_name
    with contextlib.suppress(OSError, ValueError):
        verify_image(final)
        _touch(final)
        return final
    _require_root()
    with build_lock(progress):
        with contextlib.suppress(OSError, ValueError):
            verify_image(final)  # built by whoever held the lock
            return final
        prune()
        run = Runner(progress)
        base = ensure_base(recipe, keys, run)
        base_info = json.loads((base / "base.json").read_text())
        info: dict[str, object] = {
            "contract": vmcontract.CONTRACT_VERSION, "arch": keys.arch,
            "recipe_hash": keys.recipe_hash, "base_key": keys.base_key,
            "image_key": keys.image_key, "kernel_version": base_info["kernel_version"],
            "pydesk_version": keys.version}
        from pydesk.vm.imagebuild import build_image
        started = time.monotonic()
        build_into(final, lambda tmp: build_image(recipe, base, tmp, info, run))
        _touch(base)
        progress(f"image {keys.image_name} built in {time.monotonic() - started:.1f}s")
        for old in prune():
            progress(f"removed {old.name} from the cache")
    return final
