"""Stage 2 of the guest image build: pydeskd into a copy of the base tree, then the erofs image.

What it is for: ``build_image`` hard-links the stage-1 tree (fast: no data copied; only new files
are added, so the base is never modified), adds pydeskd's sources compiled to bytecode and its
console scripts in ``/opt/pydesk/bin``, and makes ``rootfs.erofs`` with fixed times and UUID;
the kernel and initramfs come from stage 1 unchanged. Seconds, so keyed by the sources.

What it must never do: write into the base tree's existing files (they are hard links), or
include anything of the checkout but pydeskd's ``*.py`` files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tomllib
from pathlib import Path

from pydesk.vm.imagebase import (
    GUEST_INIT,
    PYDESK_PREFIX,
    SITE_PACKAGES,
    ImageBuildError,
    Runner,
    compile_tree,
)
from pydesk.vm.imagerecipe import GUEST_PACKAGE_DIR, REPO_ROOT, Recipe
from pydeskd import vmcontract

IMAGE_FILES = (vmcontract.KERNEL_FILE, vmcontract.INITRD_FILE, vmcontract.ROOTFS_FILE)
SCRIPT = """#!{prefix}/bin/python3 -IS
import sys
sys.path.insert(0, {site!r})
from {module} import {function}
sys.exit({function}())
"""


def guest_scripts(pyproject: Path = REPO_ROOT / "pyproject.toml") -> dict[str, str]:
    """The console scripts whose entry point is in pydeskd ({name: "module:function"}), plus
    the guest init."""
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    out = {name: str(target) for name, target in scripts.items()
           if str(target).startswith("pydeskd.")}
    out[Path(GUEST_INIT).name] = "pydeskd.guestinit.main:main"
    out["pydeskd-preload"] = "pydeskd.guestinit.preload:main"
    return out


def script_text(target: str) -> str:
    module, _, function = target.partition(":")
    return SCRIPT.format(prefix=PYDESK_PREFIX, site=SITE_PACKAGES, module=module,
                         function=function)


def copy_sources(package_dir: Path, target: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = Path(dirpath).relative_to(package_dir)
        for name in sorted(filenames):
            if name.endswith(".py"):
                (target / rel).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(dirpath) / name, target / rel / name)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def mkfs_erofs(recipe: Recipe, tree: Path, image: Path, run: Runner) -> None:
    argv = ["mkfs.erofs", "--quiet", f"-T{recipe.source_date_epoch}",
            f"-U{recipe.filesystem_uuid}", "-x-1"]
    if recipe.erofs_compression:
        argv.append(f"-z{recipe.erofs_compression}")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(recipe.source_date_epoch))
    run.run([*argv, str(image), str(tree)], env=env)


def build_image(recipe: Recipe, base: Path, out: Path, info: dict[str, object],
                run: Runner, *, package_dir: Path = GUEST_PACKAGE_DIR) -> dict[str, object]:
    """Stage 2 into ``out`` (an empty directory) from the stage-1 directory ``base``; writes
    the three image files and image.json (``info`` plus the file digests)."""
    tree = out / "tree"
    run.progress("root tree (hard links to the base)")
    run.run(["cp", "-al", str(base / "tree"), str(tree)])
    try:
        site = tree / SITE_PACKAGES.lstrip("/")
        target = site / "pydeskd"
        if target.exists():
            raise ImageBuildError(f"the base tree already has {SITE_PACKAGES}/pydeskd")
        run.progress("pydeskd sources and bytecode")
        copy_sources(package_dir, target)
        failed = compile_tree(target, SITE_PACKAGES + "/pydeskd", run)
        if failed:
            raise ImageBuildError(f"pydeskd's sources did not all compile:\n{failed}")
        bindir = tree / PYDESK_PREFIX.lstrip("/") / "bin"
        for name, entry in sorted(guest_scripts().items()):
            script = bindir / name
            script.write_text(script_text(entry))
            script.chmod(0o755)
        release = tree / "etc/pydesk/image.json"
        release.unlink(missing_ok=True)
        release.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        run.progress("rootfs.erofs")
        mkfs_erofs(recipe, tree, out / vmcontract.ROOTFS_FILE, run)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    for name in (vmcontract.KERNEL_FILE, vmcontract.INITRD_FILE):
        shutil.copyfile(base / name, out / name)
    full = dict(info, files={name: sha256_file(out / name) for name in IMAGE_FILES})
    (out / vmcontract.IMAGE_INFO_FILE).write_text(json.dumps(full, indent=1, sort_keys=True)
                                                  + "\n")
    return full
