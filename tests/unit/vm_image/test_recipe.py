"""The recipe as data, the cache keys, module load order, kernel package, requirement pins."""

from __future__ import annotations

import shutil
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from pydesk.vm import imagerecipe
from pydesk.vm.imagerecipe import RecipeError, load_order, parse_modules_dep


def test_the_checked_in_recipe_loads() -> None:
    recipe = imagerecipe.load_recipe()
    assert recipe.suite == "bookworm"
    assert {"python3", "openssh-server", "e2fsprogs", "kmod", "busybox-static"} \
        <= set(recipe.packages)
    assert recipe.arch("amd64").kernel_package == "linux-image-cloud-amd64"
    assert recipe.arch("arm64").pip_platform == "manylinux2014_aarch64"
    with pytest.raises(RecipeError, match="no architecture 'mips'"):
        recipe.arch("mips")


def test_each_architecture_loads_its_power_key_driver() -> None:
    """The ACPI power button's driver is a module in cloud-amd64, built into cloud-arm64
    (load_order refuses a module that is not in modules.dep)."""
    recipe = imagerecipe.load_recipe()
    amd64 = recipe.initramfs_modules_for("amd64")
    arm64 = recipe.initramfs_modules_for("arm64")
    assert amd64 == (*recipe.initramfs_modules, "button")
    assert arm64 == recipe.initramfs_modules
    assert recipe.arch("arm64").qemu_system == "qemu-system-aarch64"


def test_arch_initramfs_modules_must_be_strings(tmp_path: Path) -> None:
    recipe = _copy_recipe(tmp_path)
    toml = recipe.directory / "recipe.toml"
    toml.write_text(toml.read_text().replace('initramfs_modules = []',
                                             'initramfs_modules = "button"'))
    with pytest.raises(RecipeError, match=r"arch\.arm64\.initramfs_modules"):
        imagerecipe.load_recipe(recipe.directory)


def test_guest_requirements_pin_pyproject_and_the_venv() -> None:
    recipe = imagerecipe.load_recipe()
    pins = imagerecipe.requirement_pins(recipe.requirements.read_text())
    pyproject = tomllib.loads((imagerecipe.REPO_ROOT / "pyproject.toml").read_text())
    top = {dep.split("==")[0].lower(): dep.split("==")[1]
           for dep in pyproject["project"]["dependencies"]}
    for name in ("fastapi", "h11", "uvicorn", "urllib3", "zstandard", "pyroute2"):
        assert pins[name] == top[name], name
    for name, pinned in pins.items():
        assert version(name) == pinned, f"{name}: venv has {version(name)}, image pins {pinned}"


def test_requirement_pins_refuse_unpinned_lines() -> None:
    assert imagerecipe.requirement_pins("# c\nFoo_Bar==1.0  # x\n") == {"foo-bar": "1.0"}
    with pytest.raises(RecipeError, match="not pinned"):
        imagerecipe.requirement_pins("fastapi>=1\n")


def test_missing_or_broken_recipe_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no guest image recipe"):
        imagerecipe.load_recipe(tmp_path)
    (tmp_path / "recipe.toml").write_text("suite = [")
    with pytest.raises(RecipeError):
        imagerecipe.load_recipe(tmp_path)
    (tmp_path / "recipe.toml").write_text('suite = "x"\n')
    with pytest.raises(RecipeError, match="missing or invalid"):
        imagerecipe.load_recipe(tmp_path)


def _copy_recipe(tmp_path: Path) -> imagerecipe.Recipe:
    shutil.copytree(imagerecipe.RECIPE_DIR, tmp_path / "vm-images")
    return imagerecipe.load_recipe(tmp_path / "vm-images")


def test_base_key_follows_the_recipe_files_only(tmp_path: Path) -> None:
    recipe = _copy_recipe(tmp_path)
    key = imagerecipe.base_key(recipe, "amd64")
    assert imagerecipe.base_key(recipe, "amd64") == key
    assert imagerecipe.base_key(recipe, "arm64") != key
    sshd = recipe.directory / "rootfs/etc/ssh/sshd_config"
    sshd.write_text(sshd.read_text() + "# changed\n")
    assert imagerecipe.base_key(recipe, "amd64") != key


def test_image_key_follows_sources_and_version_but_not_bytecode(tmp_path: Path) -> None:
    recipe = imagerecipe.load_recipe()
    pkg = tmp_path / "pydeskd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub/m.py").write_text("x = 1\n")
    key = imagerecipe.image_key(recipe, "amd64", "1.0", pkg)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__/m.cpython-311.pyc").write_bytes(b"junk")
    (pkg / "notes.txt").write_text("not a source")
    assert imagerecipe.image_key(recipe, "amd64", "1.0", pkg) == key
    assert imagerecipe.image_key(recipe, "amd64", "1.1", pkg) != key
    (pkg / "sub/m.py").write_text("x = 2\n")
    assert imagerecipe.image_key(recipe, "amd64", "1.0", pkg) != key


def test_hash_files_separates_names_from_contents(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("xy")
    b.write_text("")
    assert imagerecipe.hash_files([("a", a), ("b", b)]) != \
        imagerecipe.hash_files([("a", b), ("b", a)])


MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko \
kernel/drivers/virtio/virtio.ko
kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
"""


def test_load_order_puts_every_dependency_first_once() -> None:
    deps = parse_modules_dep(MODULES_DEP)
    order = [imagerecipe.module_name(p) for p in
             load_order(deps, ["virtio_pci", "virtio-blk", "erofs", "net_failover"])]
    assert len(order) == len(set(order))
    for user, needs in (("virtio_pci", ("virtio", "virtio_ring", "virtio_pci_modern_dev",
                                        "virtio_pci_legacy_dev")),
                        ("virtio_blk", ("virtio", "virtio_ring")), ("erofs", ("libcrc32c",)),
                        ("net_failover", ("failover",))):
        for dep in needs:
            assert order.index(dep) < order.index(user), (dep, user, order)
    assert order.index("virtio") < order.index("virtio_ring")


def test_load_order_names_a_module_it_does_not_know() -> None:
    with pytest.raises(RecipeError, match=r"'ext4' is not in modules\.dep"):
        load_order(parse_modules_dep(MODULES_DEP), ["ext4"])


def test_load_order_on_the_real_kernel_modules_dep() -> None:
    found = sorted(Path("/lib/modules").glob("*/modules.dep"))
    if not found:
        pytest.fail("no kernel modules on this machine (linux-image-cloud-amd64 is installed "
                    "by scripts/setup)")
    deps = parse_modules_dep(found[-1].read_text())
    recipe = imagerecipe.load_recipe()
    order = load_order(deps, recipe.initramfs_modules)
    assert {imagerecipe.module_name(p) for p in order} >= set(recipe.initramfs_modules)


def test_versioned_kernel_package_from_the_index() -> None:
    packages = ("Package: linux-image-cloud-amd64\nVersion: 6.1.99\n"
                "Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.99)\n\n"
                "Package: other\nDepends: linux-image-9\n")
    assert imagerecipe.versioned_kernel_package(packages, "linux-image-cloud-amd64") == \
        "linux-image-6.1.0-50-cloud-amd64"
    with pytest.raises(RecipeError, match="not found"):
        imagerecipe.versioned_kernel_package(packages, "linux-image-cloud-arm64")
