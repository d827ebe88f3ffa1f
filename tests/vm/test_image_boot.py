"""The guest image boots under TCG with a minimal QEMU command line of this test's own.

Checks the image alone (not the host driver): the initramfs finds the root by serial, the guest
init reads the fw_cfg configuration, makes ext4 on a blank data disk, starts sshd (key only,
pinned host key, streamlocal to pydeskd) and pydeskd, says ready; the ACPI power button gives a
clean power-off (fsck-clean data disk, QEMU exits by itself); state survives a reboot and a
killed QEMU; the filesystem grows with its disk; the image round-trips through a registry.
Launch -> ready is printed (target under TCG: 10 s; see docs/vm-image.md).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko  # type: ignore[import-untyped]
import pytest

from pydesk.vm.channel import GuestChannel
from pydesk.vm.image import read_image_info, verify_image
from pydesk.vm.imageregistry import pull_image, push_image
from pydeskd import vmcontract
from tests.support.registry import Registry
from tests.vm.image_fixtures import (
    GuestKeys,
    MinimalGuest,
    data_disk_raw,
    debugfs_cat,
    guests,
    new_data_disk,
)

Factory = Callable[..., MinimalGuest]


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[Factory]:
    yield from guests(tmp_path)


@pytest.fixture
def image_registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry") as reg:
        yield reg


def _clean_ext4(raw: Path) -> None:
    check = subprocess.run(["e2fsck", "-fn", str(raw)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def _block_count(raw: Path) -> int:
    out = subprocess.run(["dumpe2fs", "-h", str(raw)], capture_output=True, text=True,
                         check=True).stdout
    return int(next(line.split(":")[1] for line in out.splitlines()
                    if line.startswith("Block count:")))


def test_boots_to_ready_serves_ssh_and_powers_off_cleanly(
        guest_image: Path, boot: Factory, tmp_path: Path) -> None:
    keys = GuestKeys(tmp_path / "keys")
    disk = new_data_disk(tmp_path / "data.qcow2")
    guest = boot(guest_image, disk, keys.config("boot"))
    ready = guest.wait_for(vmcontract.GUEST_SERIAL_READY)
    print(f"\nlaunch -> {vmcontract.GUEST_SERIAL_READY!r}: {ready:.1f}s (TCG)")
    console = guest.console()
    assert "no filesystem, making ext4" in console

    with GuestChannel.connect(guest.ssh_port, keys.client, keys.host_public,
                              timeout=30) as channel:
        assert channel.ping()
        info = read_image_info(guest_image)
        uname = channel.exec("uname -r; hostname; cat /proc/mounts")
        assert uname.status == 0, uname.stderr
        lines = uname.stdout.decode().splitlines()
        assert lines[0] == info.kernel_version
        assert lines[1] == "pydesk-boot"
        mounts = "\n".join(lines[2:])
        assert f"{vmcontract.DATA_MOUNT} ext4 rw" in mounts
        assert "discard" in next(m for m in lines if f" {vmcontract.DATA_MOUNT} " in m)
        assert " / erofs ro" in mounts
        assert "cgroup2 /sys/fs/cgroup" in mounts
        rw = channel.exec("touch /usr/x")
        assert rw.status != 0 and b"Read-only file system" in rw.stderr

    # Passwords are refused outright (key only).
    transport = paramiko.Transport(("127.0.0.1", guest.ssh_port))
    try:
        transport.start_client(timeout=30)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_password(vmcontract.GUEST_USER, "")
    finally:
        transport.close()

    assert guest.power_down() == 0
    assert vmcontract.GUEST_SERIAL_POWEROFF in guest.console()
    raw = data_disk_raw(disk, tmp_path / "data.raw")
    _clean_ext4(raw)
    assert debugfs_cat(raw, "/engine-id").strip()


def test_state_survives_reboots_and_a_killed_qemu_and_the_disk_grows(
        guest_image: Path, boot: Factory, tmp_path: Path) -> None:
    keys = GuestKeys(tmp_path / "keys")
    disk = new_data_disk(tmp_path / "data.qcow2", "2G")
    first = boot(guest_image, disk, keys.config("state"), "first")
    first.wait_for(vmcontract.GUEST_SERIAL_READY)
    assert first.power_down() == 0
    raw = data_disk_raw(disk, tmp_path / "first.raw")
    engine_id = debugfs_cat(raw, "/engine-id").strip()
    blocks = _block_count(raw)
    raw.unlink()

    subprocess.run(["qemu-img", "resize", "-q", str(disk), "3G"], check=True)
    second = boot(guest_image, disk, keys.config("state"), "second")
    second.wait_for(vmcontract.GUEST_SERIAL_READY)
    assert "growing the filesystem" in second.console()
    second.kill()  # like kill -9: no clean unmount

    third = boot(guest_image, disk, keys.config("state"), "third")
    third.wait_for(vmcontract.GUEST_SERIAL_READY)
    assert third.power_down() == 0
    raw = data_disk_raw(disk, tmp_path / "third.raw")
    _clean_ext4(raw)
    assert debugfs_cat(raw, "/engine-id").strip() == engine_id
    assert _block_count(raw) > blocks * 1.4


def test_no_configuration_still_boots_and_says_why(
        guest_image: Path, boot: Factory, tmp_path: Path) -> None:
    keys = GuestKeys(tmp_path / "keys")
    bad = vmcontract.GuestConfig("bad", "not a key", keys.host.read_text())
    guest = boot(guest_image, new_data_disk(tmp_path / "data.qcow2"), bad)
    guest.wait_for(vmcontract.GUEST_SERIAL_READY)
    assert "sshd not started: authorized_key must be one OpenSSH public key line" \
        in guest.console()
    assert guest.power_down() == 0


def test_push_and_pull_round_trip_verified(guest_image: Path, image_registry: Registry,
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ref = image_registry.ref("pydesk/vm-image:test")
    digest = push_image(guest_image, ref)
    monkeypatch.setenv("PYDESK_CACHE", str(tmp_path / "cache"))
    pulled = pull_image(f"{image_registry.ref('pydesk/vm-image')}@{digest}")
    assert pulled.is_relative_to(tmp_path / "cache")
    assert verify_image(pulled, digests=True) == verify_image(guest_image, digests=True)
    for name in (vmcontract.KERNEL_FILE, vmcontract.INITRD_FILE, vmcontract.ROOTFS_FILE):
        assert (pulled / name).read_bytes() == (guest_image / name).read_bytes()
    assert pull_image(ref) == pulled  # already in the cache
    assert push_image(guest_image, ref) == digest  # reproducible manifest
