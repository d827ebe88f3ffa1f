"""Stage 1 of the guest image build: the Debian root tree, the kernel and the initramfs.

What it is for: ``build_base`` turns the recipe into ``<dir>/tree`` (debootstrap minbase with the
recipe's packages, the kernel's modules, pydeskd's dependencies in ``/opt/pydesk``, the files of
``vm-images/rootfs``, stripped and compiled to bytecode), ``<dir>/vmlinuz`` and
``<dir>/initrd.img``. Slow (debootstrap: about a minute), so cached by ``base_key``. Every
external program goes through ``Runner`` (one place that logs the command line on failure).

What it must never do: run without root (debootstrap and chroot need it: the caller checks), write
outside the directory it is given (the debootstrap package cache aside), or leave a chroot's
mounts behind.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydesk.vm import imagecpio
from pydesk.vm.imageforeign import ForeignArchError, foreign_arch
from pydesk.vm.imagerecipe import (
    Recipe,
    RecipeError,
    host_arch,
    load_order,
    parse_modules_dep,
    versioned_kernel_package,
)
from pydeskd import vmcontract

Progress = Callable[[str], None]
PYDESK_PREFIX = "/opt/pydesk"
SITE_PACKAGES = PYDESK_PREFIX + "/lib/python3.11/site-packages"
GUEST_INIT = PYDESK_PREFIX + "/bin/pydesk-init"
GUEST_MODULES_FILE = "/etc/pydesk/guest-modules"
PYTHON_DIRS = ("/usr/lib/python3.11", "/usr/lib/python3/dist-packages", SITE_PACKAGES)
BUSYBOX_APPLETS = ("sh", "mount", "umount", "insmod", "switch_root", "mkdir", "cat", "sleep",
                   "usleep", "poweroff", "echo")
MINIMUM_TREE_DIRS = ("dev", "proc", "sys", "run", "tmp", "var/tmp", "var/log", "root",
                     vmcontract.DATA_MOUNT.lstrip("/"))


CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
              "DEBIAN_FRONTEND": "noninteractive"}


class ImageBuildError(RuntimeError):
    """A build step failed; the message says which, with the command line and its output."""


class Runner:
    """Runs the build's external programs; the one place that does."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.last_returncode = 0

    def run(self, argv: Sequence[str], *, timeout: float = 1800, cwd: Path | None = None,
            env: dict[str, str] | None = None, ok_codes: Sequence[int] = (0,)) -> str:
        """The program's stdout. Raises ImageBuildError (exit status not in ``ok_codes``,
        timeout, not found)."""
        try:
            result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                    cwd=cwd, env=env, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ImageBuildError(f"timed out after {timeout:.0f}s: {shlex.join(argv)}") from None
        except FileNotFoundError:
            raise ImageBuildError(f"{argv[0]} is not installed (needed by the image build: "
                                  "apt-get install debootstrap erofs-utils)") from None
        self.last_returncode = result.returncode
        if result.returncode not in ok_codes:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
            raise ImageBuildError(f"exit {result.returncode}: {shlex.join(argv)}\n{tail}")
        return result.stdout


def debootstrap(recipe: Recipe, arch: str, tree: Path, debs: Path, run: Runner) -> None:
    params = recipe.arch(arch)
    debs.mkdir(parents=True, exist_ok=True)
    run.progress(f"debootstrap {recipe.suite} ({params.debian_arch}) from "
                 f"{recipe.effective_mirror}")
    run.run(["debootstrap", "--variant=minbase", f"--arch={params.debian_arch}",
             f"--include={','.join(recipe.packages)}", f"--cache-dir={debs.resolve()}",
             recipe.suite, str(tree), recipe.effective_mirror],
            env=dict(os.environ, SOURCE_DATE_EPOCH=str(recipe.source_date_epoch)))


def install_kernel(recipe: Recipe, arch: str, tree: Path, out: Path, run: Runner) -> str:
    """Kernel modules into the tree (dpkg-deb -x, depmod), vmlinuz into ``out``; the kernel
    version. The package is extracted, not installed: no initramfs-tools in the image."""
    params = recipe.arch(arch)
    lists = sorted((tree / "var/lib/apt/lists").glob("*_Packages"))
    if not lists:
        raise ImageBuildError("debootstrap left no package index in the tree")
    package = versioned_kernel_package("\n\n".join(p.read_text() for p in lists),
                                       params.kernel_package)
    run.progress(f"kernel {package}")
    run.run(["chroot", str(tree), "sh", "-c", f"cd /tmp && apt-get download -q {package}"],
            env=CHROOT_ENV)
    debs = list((tree / "tmp").glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise ImageBuildError(f"apt-get download {package} left {len(debs)} packages")
    staging = out / "kernel-deb"
    run.run(["dpkg-deb", "-x", str(debs[0]), str(staging)])
    debs[0].unlink()
    merge_into_usrmerged(staging, tree)
    shutil.rmtree(staging)
    images = sorted((tree / "boot").glob(params.kernel_image))
    if len(images) != 1:
        raise ImageBuildError(f"{package} has {len(images)} files {params.kernel_image} in /boot")
    version = images[0].name.split("-", 1)[1]
    shutil.copyfile(images[0], out / vmcontract.KERNEL_FILE)
    run.run(["chroot", str(tree), "depmod", version], env=CHROOT_ENV)
    clamp_times(tree, recipe.source_date_epoch)
    return version


def merge_into_usrmerged(staging: Path, tree: Path) -> None:
    """Copy an extracted package into a merged-/usr tree: ``lib``, ``bin``, ``sbin`` of the
    package go under ``usr`` (extracting over the tree would replace its ``/lib`` symlink with a
    directory and lose the dynamic loader)."""
    for top in sorted(staging.iterdir()):
        name = top.name
        dest = tree / ("usr/" + name if name in ("lib", "bin", "sbin", "lib64") else name)
        shutil.copytree(top, dest, symlinks=True, dirs_exist_ok=True)


def clamp_times(tree: Path, epoch: int) -> None:
    """/etc/shadow's "last changed" day is the build's day unless debootstrap's tools honoured
    SOURCE_DATE_EPOCH: clamp it (the image must not depend on the day it was built)."""
    shadow = tree / "etc/shadow"
    day = str(epoch // 86400)
    lines = []
    for line in shadow.read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit() and int(fields[2]) > int(day):
            fields[2] = day
        lines.append(":".join(fields))
    shadow.write_text("".join(line + "\n" for line in lines))


def install_python_deps(recipe: Recipe, arch: str, tree: Path, run: Runner) -> None:
    """A virtualenv-shaped /opt/pydesk over the image's python3, with the pinned wheels."""
    params = recipe.arch(arch)
    prefix = tree / PYDESK_PREFIX.lstrip("/")
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    site = tree / SITE_PACKAGES.lstrip("/")
    site.mkdir(parents=True, exist_ok=True)
    (prefix / "bin/python3").symlink_to("/usr/bin/python3")
    (prefix / "bin/python").symlink_to("python3")
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n"
                                       "version = 3.11\n")
    run.progress("pydeskd's dependencies (pip, cp311 wheels)")
    run.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--only-binary=:all:", "--no-compile", "--implementation", "cp",
             "--python-version", "3.11", "--abi", "cp311", "--platform", params.pip_platform,
             "--target", str(site), "-r", str(recipe.requirements)])
    # pip's console-script wrappers (unused: pydeskd has its own) name pip's temporary directory
    # in their shebang; drop them and their RECORD lines, or no two builds would be identical.
    for junk in site.glob("bin"):
        shutil.rmtree(junk)
    for record in sorted(site.glob("*.dist-info/RECORD")):
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(line for line in lines if not line.startswith("../")))


def copy_rootfs_files(recipe: Recipe, tree: Path) -> None:
    source = recipe.directory / "rootfs"
    for path in sorted(source.rglob("*")):
        target = tree / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name != ".keep":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            shutil.copyfile(path, target)
            target.chmod(0o644)
    modules = tree / GUEST_MODULES_FILE.lstrip("/")
    modules.parent.mkdir(parents=True, exist_ok=True)
    modules.write_text("".join(m + "\n" for m in recipe.guest_modules))


def strip_tree(recipe: Recipe, tree: Path) -> None:
    for pattern in recipe.strip:
        for found in glob.glob(str(tree / pattern)):
            path = Path(found)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for name in MINIMUM_TREE_DIRS:
        (tree / name).mkdir(parents=True, exist_ok=True)
    mtab = tree / "etc/mtab"
    if not mtab.is_symlink():
        mtab.unlink(missing_ok=True)
        mtab.symlink_to("../proc/self/mounts")


def compile_tree(root: Path, ddir: str, run: Runner) -> str:
    """Compiles every ``.py`` under ``root`` to an unchecked-hash pyc that names its source as
    under ``ddir``; "" when all compiled, else compileall's list of failures. A fresh interpreter
    with a fixed hash seed does it: set constants are marshalled in hash order, and marshal's
    output depends on what the compiling process has interned, so compiling in-process would
    not be reproducible.
    """
    if sys.version_info[:2] != (3, 11):
        raise ImageBuildError("the image build needs Python 3.11 (the image's version) to "
                              f"compile bytecode; this is {sys.version.split()[0]}")
    for stale in root.rglob("__pycache__"):
        shutil.rmtree(stale)
    out = run.run([sys.executable, "-S", "-s", "-m", "compileall", "-q", "-f", "-j", "0",
                   "--invalidation-mode", "unchecked-hash", "-d", ddir, str(root)],
                  env={"PYTHONHASHSEED": "0", "PATH": os.defpath, "LANG": "C.UTF-8"},
                  ok_codes=(0, 1))
    return "" if run.last_returncode == 0 else (out.strip() or "compileall failed")


def compile_python(tree: Path, dirs: Sequence[str], run: Runner) -> None:
    """Bytecode for every module, as unchecked-hash pycs: the root is read-only (nothing could
    be cached at run time), file times are normalised (timestamp pycs would all be stale), and
    an unchecked pyc costs no stat of its source at import."""
    run.progress("compiling Python to bytecode")
    for d in dirs:
        if compile_tree(tree / d.lstrip("/"), d, run):
            # A few files of Debian's packages are templates or Python 2 (never imported).
            run.progress(f"note: some files under {d} did not compile (not imported)")


def build_initramfs(recipe: Recipe, tree: Path, kernel_version: str,
                    arch: str = "amd64") -> bytes:
    """busybox, its applet links, the modules that reach the root (in load order), /init.
    Everything comes from ``tree``, so it is the tree's architecture's (arm64 busybox-static
    and kernel modules in an arm64 tree)."""
    moddir = tree / "lib/modules" / kernel_version
    order = load_order(parse_modules_dep((moddir / "modules.dep").read_text()),
                       recipe.initramfs_modules_for(arch))
    init = (recipe.directory / "initramfs/init").read_text()
    for name, value in (("ROOT_DISK_SERIAL", vmcontract.ROOT_DISK_SERIAL),
                        ("GUEST_INIT", GUEST_INIT)):
        init = init.replace(f"@{name}@", value)
    left = re.findall(r"@[A-Z_]+@", init)
    if left:
        raise RecipeError(f"initramfs/init has placeholders the build does not fill: {left}")
    busybox = tree / "bin/busybox"
    entries = [imagecpio.directory(d) for d in ("bin", "dev", "proc", "sys", "newroot", "lib",
                                                "lib/modules")]
    entries.append(imagecpio.file("bin/busybox", busybox.read_bytes(), 0o755))
    entries += [imagecpio.symlink(f"bin/{a}", "busybox") for a in BUSYBOX_APPLETS]
    entries.append(imagecpio.file("init", init.encode(), 0o755))
    entries.append(imagecpio.file("modules.list", "".join(p + "\n" for p in order).encode()))
    for path in order:
        parts = Path(path).parts
        for i in range(1, len(parts)):
            entries.append(imagecpio.directory("lib/modules/" + "/".join(parts[:i])))
        entries.append(imagecpio.file("lib/modules/" + path, (moddir / path).read_bytes()))
    unique = {e.path: e for e in entries}
    return imagecpio.archive(list(unique.values()), recipe.source_date_epoch)


def _build_tree(recipe: Recipe, arch: str, out: Path, debs: Path, run: Runner) -> str:
    """The steps that run the tree's own programs (chroot) on ``out/tree``; the kernel
    version."""
    tree = out / "tree"
    debootstrap(recipe, arch, tree, debs, run)
    kernel_version = install_kernel(recipe, arch, tree, out, run)
    install_python_deps(recipe, arch, tree, run)
    copy_rootfs_files(recipe, tree)
    strip_tree(recipe, tree)
    return kernel_version


def build_base(recipe: Recipe, arch: str, out: Path, debs: Path, run: Runner) -> dict[str, str]:
    """Stage 1 into ``out`` (an empty directory); returns the facts for base.json. Another
    architecture's tree (arm64 on x86_64) is built the same way, its programs run through
    qemu-user (``imageforeign``). Raises ImageBuildError."""
    tree = out / "tree"
    if arch == host_arch():
        kernel_version = _build_tree(recipe, arch, out, debs, run)
    else:
        try:
            with foreign_arch(arch, run.progress):
                kernel_version = _build_tree(recipe, arch, out, debs, run)
        except ForeignArchError as e:
            raise ImageBuildError(f"cannot build the {arch} image on a {host_arch()} machine: "
                                  f"{e}") from None
    # Bytecode is the same on every architecture: the builder's Python 3.11 makes it.
    compile_python(tree, PYTHON_DIRS, run)
    run.progress("initramfs")
    (out / vmcontract.INITRD_FILE).write_bytes(build_initramfs(recipe, tree, kernel_version,
                                                               arch))
    info = {"arch": arch, "kernel_version": kernel_version, "suite": recipe.suite}
    (out / "base.json").write_text(json.dumps(info, indent=1) + "\n")
    os.sync()
    return info
