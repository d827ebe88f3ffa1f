"""The cpio writer (checked with the system's cpio) and the initramfs contents."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pydesk.vm import imagecpio
from pydesk.vm.imagebase import BUSYBOX_APPLETS, GUEST_INIT, build_initramfs
from pydesk.vm.imagerecipe import RecipeError, load_recipe
from pydeskd import vmcontract


def _cpio() -> str:
    found = shutil.which("cpio")
    if not found:
        pytest.fail("cpio is not installed (apt-get install cpio)")
    return found


def test_archive_is_reproducible_and_readable_by_cpio(tmp_path: Path) -> None:
    entries = [imagecpio.directory("bin"), imagecpio.file("bin/tool", b"#!x\n" * 3, 0o755),
               imagecpio.symlink("bin/sh", "tool"), imagecpio.file("odd", b"12345")]
    data = imagecpio.archive(entries, 1000)
    assert data == imagecpio.archive(list(reversed(entries)), 1000)
    assert len(data) % 4 == 0
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run([_cpio(), "-idm", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "bin/tool").read_bytes() == b"#!x\n" * 3
    assert (out / "bin/tool").stat().st_mode & 0o777 == 0o755
    assert (out / "bin/sh").readlink() == Path("tool")
    assert (out / "odd").read_text() == "12345"
    assert (out / "odd").stat().st_mtime == 1000
    listing = subprocess.run([_cpio(), "-it", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == ["bin", "bin/sh", "bin/tool", "odd"]


def _fake_tree(tmp_path: Path) -> tuple[Path, str]:
    tree, version = tmp_path / "tree", "6.1.0-1-cloud-amd64"
    moddir = tree / "lib/modules" / version
    deps = {"kernel/drivers/virtio/virtio.ko": [],
            "kernel/drivers/virtio/virtio_ring.ko": [],
            "kernel/drivers/virtio/virtio_pci.ko": ["kernel/drivers/virtio/virtio_ring.ko",
                                                    "kernel/drivers/virtio/virtio.ko"],
            "kernel/drivers/block/virtio_blk.ko": ["kernel/drivers/virtio/virtio.ko"],
            "kernel/fs/erofs/erofs.ko": [], "kernel/fs/overlayfs/overlay.ko": [],
            "kernel/drivers/net/virtio_net.ko": [], "kernel/drivers/firmware/qemu_fw_cfg.ko": [],
            "kernel/drivers/acpi/button.ko": [], "kernel/drivers/input/evdev.ko": [],
            "kernel/drivers/char/virtio_console.ko": ["kernel/drivers/virtio/virtio.ko",
                                                      "kernel/drivers/virtio/virtio_ring.ko"],
            "kernel/net/bridge/bridge.ko": []}
    for path in deps:
        (moddir / path).parent.mkdir(parents=True, exist_ok=True)
        (moddir / path).write_bytes(b"ko:" + path.encode())
    (moddir / "modules.dep").write_text(
        "".join(f"{m}: {' '.join(d)}\n" for m, d in deps.items()))
    (tree / "bin").mkdir(parents=True)
    (tree / "bin/busybox").write_bytes(b"busybox binary")
    return tree, version


def test_initramfs_holds_busybox_the_boot_modules_in_order_and_a_filled_init(
        tmp_path: Path) -> None:
    tree, version = _fake_tree(tmp_path)
    data = build_initramfs(load_recipe(), tree, version)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([_cpio(), "-idm", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "bin/busybox").read_bytes() == b"busybox binary"
    for applet in BUSYBOX_APPLETS:
        assert (out / "bin" / applet).readlink() == Path("busybox")
    order = (out / "modules.list").read_text().split()
    assert order.index("kernel/drivers/virtio/virtio.ko") < \
        order.index("kernel/drivers/virtio/virtio_pci.ko")
    assert "kernel/net/bridge/bridge.ko" not in order  # loaded later, by the guest init
    for path in order:
        assert (out / "lib/modules" / path).read_bytes() == b"ko:" + path.encode()
    init = (out / "init").read_text()
    assert f'= "{vmcontract.ROOT_DISK_SERIAL}"' in init
    assert f"exec switch_root /newroot {GUEST_INIT}" in init
    assert "@" not in init.replace("$@", "")
    assert (out / "init").stat().st_mode & 0o111
    assert build_initramfs(load_recipe(), tree, version) == data


def test_the_arm64_initramfs_has_no_acpi_button_module(tmp_path: Path) -> None:
    """cloud-arm64 builds the ACPI button in: its modules.dep has no button.ko, and the arm64
    initramfs must not ask for one (load_order would refuse it)."""
    tree, version = _fake_tree(tmp_path)
    dep = tree / "lib/modules" / version / "modules.dep"
    dep.write_text("".join(line + "\n" for line in dep.read_text().splitlines()
                           if "button" not in line))
    data = build_initramfs(load_recipe(), tree, version, "arm64")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([_cpio(), "-idm", "--quiet"], input=data, cwd=out, check=True)
    order = (out / "modules.list").read_text().split()
    assert "kernel/drivers/input/evdev.ko" in order
    assert not any("button" in path for path in order)
    with pytest.raises(RecipeError, match=r"'button' is not in modules\.dep"):
        build_initramfs(load_recipe(), tree, version, "amd64")


def test_initramfs_init_is_valid_shell() -> None:
    init = load_recipe().directory / "initramfs/init"
    subprocess.run(["sh", "-n", str(init)], check=True)


def test_bytecode_is_reproducible_and_names_the_image_path(tmp_path: Path) -> None:
    from pydesk.vm.imagebase import Runner, compile_tree
    outputs = []
    for attempt in range(2):
        src = tmp_path / f"src{attempt}" / "pkg"
        src.mkdir(parents=True)
        (src / "m.py").write_text(
            "KINDS = frozenset({'a', 'bb', 'ccc', 'dddd', 'eeeee'})\n"
            "def f(x):\n    return x in {'q', 'rr', 'sss', 'tttt'}\n")
        assert compile_tree(src, "/opt/pydesk/pkg", Runner(print)) == ""
        outputs.append((src / "__pycache__/m.cpython-311.pyc").read_bytes())
    assert outputs[0] == outputs[1]
    assert b"/opt/pydesk/pkg/m.py" in outputs[0]
    flags = int.from_bytes(outputs[0][4:8], "little")
    assert flags == 0b01  # hash-based, unchecked


def test_a_source_that_does_not_compile_is_reported(tmp_path: Path) -> None:
    from pydesk.vm.imagebase import Runner, compile_tree
    (tmp_path / "bad.py").write_text("def (:\n")
    assert "bad.py" in compile_tree(tmp_path, "/x", Runner(print))
