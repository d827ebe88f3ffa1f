"""The guest image recipe (``vm-images/``) as data, and the hashes that key the image cache.

What it is for: ``Recipe`` is ``vm-images/recipe.toml`` parsed; ``base_key`` hashes what decides
the slow first stage (the Debian root tree: the recipe directory and the base builder's code);
``image_key`` adds what decides the fast second stage (pydeskd's sources, the pydesk version,
the second-stage builder's code). Also the small pure helpers the build needs: module load
order from ``modules.dep``, the versioned kernel package from an apt ``Packages`` file.

What it must never do: touch anything but the files it hashes or reads (no subprocess, no
network), or import a guest module other than ``pydeskd.vmcontract``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydeskd import vmcontract

REPO_ROOT = Path(__file__).resolve().parents[3]
RECIPE_DIR = REPO_ROOT / "vm-images"
GUEST_PACKAGE_DIR = Path(vmcontract.__file__).resolve().parent
HOST_VM_DIR = Path(__file__).resolve().parent
BASE_BUILDER_FILES = ("imagerecipe.py", "imagebase.py", "imagecpio.py")
IMAGE_BUILDER_FILES = ("imagebuild.py",)
REQUIREMENTS_FILE = "guest-requirements.txt"
RECIPE_FILE = "recipe.toml"

_MACHINE_TO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class RecipeError(ValueError):
    """The recipe is missing or malformed."""


@dataclass(frozen=True)
class ArchParams:
    name: str
    debian_arch: str
    kernel_package: str
    kernel_image: str
    pip_platform: str
    qemu_system: str
    initramfs_modules: tuple[str, ...] = ()
    """Loaded by the initramfs after the recipe's common ones: this architecture's power key."""


@dataclass(frozen=True)
class Recipe:
    directory: Path
    suite: str
    mirror: str
    source_date_epoch: int
    filesystem_uuid: str
    erofs_compression: str
    packages: tuple[str, ...]
    strip: tuple[str, ...]
    initramfs_modules: tuple[str, ...]
    guest_modules: tuple[str, ...]
    arches: Mapping[str, ArchParams]

    def initramfs_modules_for(self, arch: str) -> tuple[str, ...]:
        """The common initramfs modules, then the architecture's own."""
        return self.initramfs_modules + self.arch(arch).initramfs_modules

    def arch(self, name: str) -> ArchParams:
        try:
            return self.arches[name]
        except KeyError:
            raise RecipeError(f"the recipe has no architecture {name!r} "
                              f"(known: {', '.join(sorted(self.arches))})") from None

    @property
    def effective_mirror(self) -> str:
        return os.environ.get("PYDESK_DEBIAN_MIRROR") or self.mirror

    @property
    def requirements(self) -> Path:
        return self.directory / REQUIREMENTS_FILE


def host_arch() -> str:
    machine = platform.machine().lower()
    try:
        return _MACHINE_TO_ARCH[machine]
    except KeyError:
        raise RecipeError(f"no guest image for this machine ({machine})") from None


def _strings(obj: object, what: str) -> tuple[str, ...]:
    if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
        raise RecipeError(f"{RECIPE_FILE}: {what} must be a list of strings")
    return tuple(obj)


def _arch_params(name: str, params: dict[str, object]) -> ArchParams:
    values = dict(params)
    modules = values.pop("initramfs_modules", [])
    return ArchParams(name, initramfs_modules=_strings(modules, f"arch.{name}.initramfs_modules"),
                      **values)  # type: ignore[arg-type]


def load_recipe(directory: Path = RECIPE_DIR) -> Recipe:
    """Raises RecipeError."""
    try:
        data = tomllib.loads((directory / RECIPE_FILE).read_text())
    except FileNotFoundError:
        raise RecipeError(f"no guest image recipe at {directory / RECIPE_FILE} (the image is "
                          "built from a pydesk source checkout; pull one instead)") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{directory / RECIPE_FILE}: {e}") from None
    try:
        arches = {name: _arch_params(name, params) for name, params in data["arch"].items()}
        return Recipe(directory, str(data["suite"]), str(data["mirror"]),
                      int(data["source_date_epoch"]), str(data["filesystem_uuid"]),
                      str(data.get("erofs_compression", "")),
                      _strings(data["packages"], "packages"), _strings(data["strip"], "strip"),
                      _strings(data["initramfs_modules"], "initramfs_modules"),
                      _strings(data["guest_modules"], "guest_modules"), arches)
    except (KeyError, TypeError) as e:
        raise RecipeError(f"{directory / RECIPE_FILE}: missing or invalid {e}") from None


# --- hashing -----------------------------------------------------------------------------------

def _files_under(root: Path, suffixes: tuple[str, ...] = ()) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not suffixes or name.endswith(suffixes):
                out.append(Path(dirpath) / name)
    return out


def hash_files(named: Iterable[tuple[str, Path]], extra: Iterable[str] = ()) -> str:
    """sha256 over (name, content) pairs in the given order, then ``extra`` strings."""
    h = hashlib.sha256()
    for name, path in named:
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    for item in extra:
        h.update(f"extra\0{item}\0".encode())
    return h.hexdigest()


def recipe_hash(recipe: Recipe) -> str:
    """The recipe directory's files, as the first stage sees them."""
    root = recipe.directory
    return hash_files((str(p.relative_to(root)), p) for p in _files_under(root))


def sources_hash(package_dir: Path = GUEST_PACKAGE_DIR) -> str:
    """pydeskd's Python sources (what the second stage copies into the image)."""
    return hash_files((str(p.relative_to(package_dir)), p)
                      for p in _files_under(package_dir, (".py",)))


def _builder_files(names: tuple[str, ...]) -> list[tuple[str, Path]]:
    return [(name, HOST_VM_DIR / name) for name in names]


def base_key(recipe: Recipe, arch: str) -> str:
    return hash_files(_builder_files(BASE_BUILDER_FILES),
                      [recipe_hash(recipe), arch, str(vmcontract.CONTRACT_VERSION)])


def image_key(recipe: Recipe, arch: str, version: str,
              package_dir: Path = GUEST_PACKAGE_DIR) -> str:
    """Also hashes pyproject.toml: the image's console scripts come from it."""
    pyproject = REPO_ROOT / "pyproject.toml"
    named = _builder_files(IMAGE_BUILDER_FILES)
    if pyproject.is_file():
        named.append(("pyproject.toml", pyproject))
    return hash_files(named, [base_key(recipe, arch), sources_hash(package_dir), version])


def pydesk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("pydesk")
    except PackageNotFoundError:
        return "0+unknown"


# --- kernel modules and packages ---------------------------------------------------------------

def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """``modules.dep`` as {module path: dependency paths}."""
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        module, _, rest = line.partition(":")
        deps[module.strip()] = tuple(rest.split())
    return deps


def module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def load_order(deps: Mapping[str, tuple[str, ...]], names: Iterable[str]) -> list[str]:
    """Module paths to insmod, every dependency before its users. Raises RecipeError for a
    module that is not in ``modules.dep`` (built in, or misspelt: say which)."""
    by_name = {module_name(path): path for path in deps}
    order: list[str] = []
    placed: set[str] = set()

    def place(path: str, chain: tuple[str, ...]) -> None:
        if path in placed:
            return
        if path in chain:
            raise RecipeError(f"module dependency cycle: {' -> '.join((*chain, path))}")
        for dep in reversed(deps.get(path, ())):
            place(dep, (*chain, path))
        placed.add(path)
        order.append(path)

    for name in names:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            raise RecipeError(f"kernel module {name!r} is not in modules.dep (built in? then "
                              "remove it from the recipe)")
        place(path, ())
    return order


def versioned_kernel_package(packages_text: str, meta_package: str) -> str:
    """The ``linux-image-<version>-<flavour>`` package that ``meta_package`` depends on, read
    from an apt ``Packages`` file."""
    for stanza in packages_text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.MULTILINE))
        if fields.get("Package") == meta_package:
            for dep in fields.get("Depends", "").split(","):
                name = dep.strip().split()[0] if dep.strip() else ""
                if name.startswith("linux-image-") and name != meta_package:
                    return name
    raise RecipeError(f"{meta_package} not found in the package index")


def requirement_pins(text: str) -> dict[str, str]:
    """``name==version`` lines as {normalised name: version}."""
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, ver = line.partition("==")
            if not sep:
                raise RecipeError(f"{REQUIREMENTS_FILE}: {line!r} is not pinned with ==")
            pins[re.sub(r"[-_.]+", "-", name.strip()).lower()] = ver.strip()
    return pins
