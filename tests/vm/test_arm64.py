"""The arm64 (Apple Silicon) guest image: built from the same recipe, booted under TCG.

Part of the vm tier, CI included: on an x86_64 builder the arm64 image is built through
qemu-user-static (binfmt_misc; about four minutes the first time, then cached by the recipe hash
like the x86_64 one) and the emulated aarch64 guest reaches its API in about 35 s here (figures in
docs/vm-image.md). Needs root, qemu-user-static, qemu-system-arm and qemu-efi-aarch64
(scripts/setup installs them).

What it checks: ``ensure_image(arch="arm64")`` gives an image whose kernel, initramfs and root
are aarch64; QEMU started with the host driver's own command line (``qemu.qemu_argv`` for an
aarch64 config: virt, ``-cpu max``, UEFI firmware for ACPI, ttyAMA0, fw_cfg, the control port
answered as the agent does) boots it until the guest init says ready; pydeskd answers ``/_ping``
through the authenticated SSH channel; the guest runs aarch64; QMP ``system_powerdown`` (the ACPI
power button) powers it off cleanly and QEMU exits by itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pydesk.vm import resume
from pydesk.vm.channel import GuestChannel
from pydesk.vm.config import Accel, Arch, VmConfig, detect_host
from pydesk.vm.image import ensure_image, read_image_info
from pydesk.vm.qemu import LaunchFiles, qemu_argv, qemu_binary_for
from pydesk.vm.qmp import Qmp
from pydeskd import vmcontract
from tests.vm.image_fixtures import GuestKeys, free_port, new_data_disk

READY_TIMEOUT = 900.0
"""Launch -> ready for an emulated aarch64 guest on 2 shared cores: generous."""
AARCH64_ELF = bytes.fromhex("b700")
"""e_machine of an AArch64 ELF (offset 18)."""


def _elf_machine(data: bytes) -> bytes:
    return data[18:20]


def _console(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace").replace("\r", "")
    except FileNotFoundError:
        return ""


def test_arm64_image_boots_under_tcg_and_answers_ping(tmp_path: Path) -> None:
    started = time.monotonic()
    image = ensure_image(lambda m: print(f"arm64 image: {m}", flush=True), arch="arm64")
    print(f"arm64 image ready in {time.monotonic() - started:.0f}s: {image}", flush=True)
    info = read_image_info(image)
    assert info.arch == "arm64"
    kernel = (image / vmcontract.KERNEL_FILE).read_bytes()
    assert kernel[56:60] == b"ARM\x64"  # the arm64 Image header's magic

    host = detect_host()  # this machine's QEMU, and the UEFI firmware for aarch64 guests
    binary = qemu_binary_for(host, Arch.AARCH64)
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed (apt-get install qemu-system-arm)")
    config = VmConfig(name="arm64", cpus=2, memory_mib=1024, accel=Accel.TCG,
                      arch=Arch.AARCH64)
    # A short directory: QMP's and the control port's socket paths must fit in sun_path.
    run_dir = Path(tempfile.mkdtemp(prefix="pd-a64-", dir="/tmp"))
    keys = GuestKeys(tmp_path / "keys")
    guest_config = tmp_path / "guest-config.json"
    guest_config.write_text(json.dumps(keys.config("arm64").to_json()))
    files = LaunchFiles(kernel=image / vmcontract.KERNEL_FILE,
                        initrd=image / vmcontract.INITRD_FILE,
                        rootfs=image / vmcontract.ROOTFS_FILE,
                        data_disk=new_data_disk(tmp_path / "data.qcow2"),
                        console_log=tmp_path / "console.log", qmp_socket=run_dir / "qmp.sock",
                        pidfile=tmp_path / "qemu.pid", guest_config=guest_config,
                        ctl_socket=run_dir / "ctl.sock")
    ssh_port = free_port()
    argv = qemu_argv(config, host, files, ssh_port)
    launched = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=(tmp_path / "qemu.out").open("wb"), stderr=subprocess.STDOUT)
    ctl: resume.CtlPort | None = None
    try:
        ctl = resume.CtlPort.connect(files.ctl_socket, 30.0, lambda: proc.poll() is None)
        deadline = launched + READY_TIMEOUT
        released_at = None
        while vmcontract.GUEST_SERIAL_READY not in _console(files.console_log):
            if proc.poll() is not None:
                pytest.fail(f"QEMU exited ({proc.returncode}):\n"
                            f"{(tmp_path / 'qemu.out').read_text()[-2000:]}\n"
                            f"{_console(files.console_log)[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {READY_TIMEOUT:.0f}s:\n"
                            f"{_console(files.console_log)[-3000:]}")
            # The agent's part of the snapshot point: no save here, just the go line.
            if released_at is None and vmcontract.CTL_AT_SNAPSHOT_POINT in ctl.lines(0.5):
                ctl.send_go()
                released_at = time.monotonic() - launched
            else:
                time.sleep(0.2)
        ready = time.monotonic() - launched
        with GuestChannel.connect(ssh_port, keys.client, keys.host_public, timeout=60) as chan:
            assert chan.ping(timeout=60)
            pinged = time.monotonic() - launched
            result = chan.exec("uname -m; cat /proc/cmdline", timeout=120)
            assert result.status == 0, result.stderr
            machine, cmdline = result.stdout.decode().split("\n", 1)
            assert machine == "aarch64"
            assert "console=ttyAMA0" in cmdline.split()
        print(f"arm64 under TCG: snapshot point {released_at}s, ready {ready:.1f}s, "
              f"/_ping {pinged:.1f}s after launch", flush=True)
        Qmp(files.qmp_socket).system_powerdown()
        try:
            code = proc.wait(180)
        except subprocess.TimeoutExpired:
            pytest.fail("QEMU still running 180 s after system_powerdown (the gpio-keys power "
                        f"key):\n{_console(files.console_log)[-3000:]}")
        assert code == 0
        assert vmcontract.GUEST_SERIAL_POWEROFF in _console(files.console_log)
    finally:
        if ctl is not None:
            ctl.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(run_dir, ignore_errors=True)
