"""vm tier helpers for the guest image alone: a minimal QEMU of the test's own (not the host
driver's), a fresh data disk, keys and the fw_cfg configuration.

What it is for: ``tests/vm/test_image_boot.py`` checks the image (initramfs, guest init, sshd,
pydeskd, power-off) independently of ``host/pydesk/vm``: ``MinimalGuest`` runs
``qemu-system-x86_64 -accel tcg`` with the two virtio disks by serial, user networking with one
127.0.0.1 forward to sshd, the configuration through fw_cfg, the serial console into a file and
an HMP monitor socket for ``system_powerdown``.

What it must never do: leave QEMU running (``close`` kills it; ``guest_factory`` closes every
guest it made), or listen on anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pydeskd import vmcontract

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 180.0
"""Launch -> ready under TCG on a loaded 2-core machine: about 20 s measured; generous bound."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GuestKeys:
    """A per-test client key and guest host key (ssh-keygen, ed25519)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.client = directory / "client_key"
        self.host = directory / "host_key"
        for path in (self.client, self.host):
            if not path.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pydesk",
                                "-f", str(path)], check=True, capture_output=True)

    @property
    def host_public(self) -> str:
        return self.host.with_suffix(".pub").read_text().strip()

    def config(self, instance: str = "test", daemon_json: str = "{}") -> vmcontract.GuestConfig:
        return vmcontract.GuestConfig(instance, self.client.with_suffix(".pub").read_text(),
                                      self.host.read_text(), daemon_json)


class MinimalGuest:
    """One QEMU process; ``close`` always kills it."""

    def __init__(self, image: Path, workdir: Path, data_disk: Path,
                 config: vmcontract.GuestConfig, *, memory: str = "1024") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.serial = workdir / "serial.log"
        self.serial.unlink(missing_ok=True)
        self.monitor = workdir / "monitor.sock"
        self.monitor.unlink(missing_ok=True)
        config_file = workdir / "config.json"
        config_file.write_text(json.dumps(config.to_json()))
        self.ssh_port = free_port()
        self.argv = [
            QEMU, "-accel", "tcg", "-m", memory, "-smp", "2", "-nographic", "-no-reboot",
            "-kernel", str(image / vmcontract.KERNEL_FILE),
            "-initrd", str(image / vmcontract.INITRD_FILE),
            "-append", " ".join(vmcontract.KERNEL_CMDLINE),
            "-drive", f"if=none,id=root,format=raw,readonly=on,"
                      f"file={image / vmcontract.ROOTFS_FILE}",
            "-device", f"virtio-blk-pci,drive=root,serial={vmcontract.ROOT_DISK_SERIAL}",
            "-drive", f"if=none,id=data,format=qcow2,discard=unmap,file={data_disk}",
            "-device", f"virtio-blk-pci,drive=data,serial={vmcontract.DATA_DISK_SERIAL}",
            "-netdev", f"user,id=net0,hostfwd=tcp:{vmcontract.HOST_FORWARD_ADDRESS}:"
                       f"{self.ssh_port}-:{vmcontract.GUEST_SSH_PORT}",
            "-device", "virtio-net-pci,netdev=net0,romfile=",  # no iPXE: nothing boots from it
            "-fw_cfg", f"name={vmcontract.FW_CFG_CONFIG},file={config_file}",
            "-serial", f"file:{self.serial}",
            "-monitor", f"unix:{self.monitor},server,nowait",
            "-display", "none",
        ]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=(workdir / "qemu.out").open("wb"),
                                     stderr=subprocess.STDOUT)

    def console(self) -> str:
        try:
            text = self.serial.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1bc|\r", "", text)

    def wait_for(self, line: str, timeout: float = BOOT_TIMEOUT) -> float:
        """Seconds from launch until ``line`` is on the console. Fails the test with the console
        when QEMU exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in self.console():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                pytest.fail(f"QEMU exited ({self.proc.returncode}) before {line!r}:\n"
                            f"{self.console()[-3000:]}")
            time.sleep(0.05)
        pytest.fail(f"no {line!r} after {timeout:.0f}s:\n{self.console()[-3000:]}")

    def hmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.monitor))
            s.sendall(command.encode() + b"\n")
            time.sleep(0.3)

    def power_down(self, timeout: float = 60.0) -> int:
        """ACPI power button; QEMU's exit code (it must exit on its own)."""
        self.hmp("system_powerdown")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"QEMU still running {timeout:.0f}s after system_powerdown:\n"
                        f"{self.console()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    close = kill


def new_data_disk(path: Path, size: str = "4G") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def data_disk_raw(disk: Path, target: Path) -> Path:
    """The qcow2 as a sparse raw image, to inspect offline (e2fsck -n, debugfs)."""
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(target)], check=True)
    return target


def debugfs_cat(raw: Path, path: str) -> str:
    out = subprocess.run(["debugfs", "-R", f"cat {path}", str(raw)], capture_output=True,
                         check=True)
    return out.stdout.decode()


def guests(tmp_path: Path) -> Iterator[Callable[..., MinimalGuest]]:
    """Boots MinimalGuests; every one is killed at the end, whatever the test did."""
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    made: list[MinimalGuest] = []

    def boot(image: Path, data_disk: Path, config: vmcontract.GuestConfig,
             name: str = "guest") -> MinimalGuest:
        guest = MinimalGuest(image, tmp_path / f"{name}-{len(made)}", data_disk, config)
        made.append(guest)
        return guest

    try:
        yield boot
    finally:
        for guest in made:
            guest.close()


@pytest.fixture
def guest_factory(tmp_path: Path) -> Iterator[Callable[..., MinimalGuest]]:
    """``guests`` as a fixture (for conftest to import)."""
    yield from guests(tmp_path)
