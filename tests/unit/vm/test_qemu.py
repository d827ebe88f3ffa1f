"""qemu_argv: every flag's presence and absence, per accelerator and architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydesk.vm.config import Accel, Arch, HostInfo, HostOS, VmConfig
from pydesk.vm.errors import InvalidArgument
from pydesk.vm.qemu import LaunchFiles, kernel_cmdline, qemu_argv, qemu_binary_for
from pydeskd import vmcontract

X86 = HostInfo(os=HostOS.LINUX, arch=Arch.X86_64, qemu_binary="/usr/bin/qemu-system-x86_64")
MAC = HostInfo(os=HostOS.MACOS, arch=Arch.AARCH64, qemu_binary="/opt/qemu-system-aarch64",
               aarch64_firmware="/opt/share/qemu/edk2-aarch64-code.fd")
WIN = HostInfo(os=HostOS.WINDOWS, arch=Arch.X86_64, qemu_binary="C:/qemu/qemu-system-x86_64.exe",
               firmware_dirs=("C:/qemu/share",))
FILES = LaunchFiles(kernel=Path("/img/vmlinuz"), initrd=Path("/img/initrd.img"),
                    rootfs=Path("/img/rootfs.erofs"), data_disk=Path("/i/data.qcow2"),
                    console_log=Path("/i/console.log"), qmp_socket=Path("/i/qmp.sock"),
                    pidfile=Path("/i/qemu.pid"), guest_config=Path("/i/guest-config.json"),
                    ctl_socket=Path("/i/ctl.sock"))


def argv(accel: Accel = Accel.TCG, host: HostInfo = X86, arch: Arch | None = None,
         **kw: int) -> list[str]:
    config = VmConfig(accel=accel, arch=arch or host.arch, **kw)  # type: ignore[arg-type]
    return qemu_argv(config, host, FILES, 2222)


def option(args: list[str], flag: str) -> list[str]:
    """Every value given to ``flag``."""
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


@pytest.mark.parametrize(("accel", "accel_arg", "cpu"), [
    (Accel.TCG, "tcg,thread=multi", "max"),
    (Accel.KVM, "kvm", "host"),
    (Accel.WHPX, "whpx", "host"),
])
def test_x86_accelerators(accel: Accel, accel_arg: str, cpu: str) -> None:
    args = argv(accel)
    assert option(args, "-machine") == ["q35"]
    assert option(args, "-accel") == [accel_arg]
    assert option(args, "-cpu") == [cpu]


def test_hvf_on_apple_silicon() -> None:
    args = argv(Accel.HVF, MAC)
    assert args[0] == "/opt/qemu-system-aarch64"
    assert option(args, "-machine") == ["virt"]
    assert option(args, "-accel") == ["hvf"]
    assert option(args, "-cpu") == ["host"]
    assert "console=ttyAMA0" in option(args, "-append")[0]


def test_tcg_arm_guest_uses_max_cpu_and_gic() -> None:
    args = argv(Accel.TCG, MAC)
    assert option(args, "-machine") == ["virt,gic-version=max"]
    # the cheap pointer-authentication algorithm: QARMA dominates aarch64 TCG time
    assert option(args, "-cpu") == ["max,pauth-impdef=on"]


def test_arm64_guest_emulated_on_an_x86_host() -> None:
    """The arm64 image booted here under TCG: qemu-system-aarch64 beside the x86 one, virt,
    the PL011 console, no x86 firmware, the same virtio-pci disks, network, fw_cfg and QMP."""
    fast = HostInfo(os=HostOS.LINUX, arch=Arch.X86_64, qemu_binary="/usr/bin/qemu-system-x86_64",
                    x86_bios="/usr/share/qemu/qboot.rom",
                    aarch64_firmware="/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
    args = argv(Accel.TCG, fast, arch=Arch.AARCH64)
    assert args[0] == "/usr/bin/qemu-system-aarch64"
    # UEFI, hence ACPI, hence the ACPI power button for system_powerdown
    assert option(args, "-bios") == ["/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"]
    assert option(args, "-machine") == ["virt,gic-version=max"]
    assert option(args, "-accel") == ["tcg,thread=multi"]
    assert option(args, "-cpu") == ["max,pauth-impdef=on"]
    assert "/usr/share/qemu/qboot.rom" not in args
    cmdline = option(args, "-append")[0].split()
    assert "console=ttyAMA0" in cmdline and "console=ttyS0" not in cmdline
    devices = option(args, "-device")
    assert sum(d.startswith("virtio-blk-pci,") for d in devices) == 2
    assert any(d.startswith("virtio-net-pci,") for d in devices)
    assert option(args, "-fw_cfg") == [
        f"name={vmcontract.FW_CFG_CONFIG},file=/i/guest-config.json"]
    assert option(args, "-serial") == ["chardev:console"]
    with pytest.raises(InvalidArgument, match="cannot run"):
        argv(Accel.KVM, fast, arch=Arch.AARCH64)


def test_an_arm64_guest_needs_uefi_firmware() -> None:
    """Without it the guest boots with a device tree and cannot be powered off cleanly."""
    bare = HostInfo(os=HostOS.MACOS, arch=Arch.AARCH64, qemu_binary="/opt/qemu-system-aarch64")
    with pytest.raises(InvalidArgument, match="no UEFI firmware"):
        argv(Accel.HVF, bare)
    assert option(argv(Accel.HVF, MAC), "-bios") == ["/opt/share/qemu/edk2-aarch64-code.fd"]


def test_find_aarch64_firmware(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydesk.vm.config import find_aarch64_firmware

    monkeypatch.delenv("PYDESK_QEMU_AARCH64_FIRMWARE", raising=False)
    (tmp_path / "bin").mkdir()
    qemu = tmp_path / "bin" / "qemu-system-aarch64"
    qemu.write_text("")
    debian = tmp_path / "share" / "qemu-efi-aarch64" / "QEMU_EFI.fd"
    debian.parent.mkdir(parents=True)
    (tmp_path / "share" / "qemu").mkdir()
    debian.write_bytes(b"fd")
    assert find_aarch64_firmware(str(qemu)) == str(debian)
    own = tmp_path / "share" / "qemu" / "edk2-aarch64-code.fd"
    own.write_bytes(b"fd")
    assert find_aarch64_firmware(str(qemu)) == str(own)  # QEMU's own first
    monkeypatch.setenv("PYDESK_QEMU_AARCH64_FIRMWARE", "/x/fw.fd")
    assert find_aarch64_firmware(str(qemu)) == "/x/fw.fd"
    monkeypatch.setenv("PYDESK_QEMU_AARCH64_FIRMWARE", "")
    assert find_aarch64_firmware(str(qemu)) is None


def test_an_x86_guest_on_apple_silicon_uses_the_x86_emulator() -> None:
    assert argv(Accel.TCG, MAC, arch=Arch.X86_64)[0] == "/opt/qemu-system-x86_64"


@pytest.mark.parametrize(("binary", "arch", "expected"), [
    ("/usr/bin/qemu-system-x86_64", Arch.X86_64, "/usr/bin/qemu-system-x86_64"),
    ("/usr/bin/qemu-system-x86_64", Arch.AARCH64, "/usr/bin/qemu-system-aarch64"),
    ("C:/qemu/qemu-system-x86_64.exe", Arch.AARCH64, "C:/qemu/qemu-system-aarch64.exe"),
    ("C:\\qemu\\qemu-system-x86_64w.exe", Arch.AARCH64, "C:\\qemu\\qemu-system-aarch64w.exe"),
    ("/opt/x86_64/bin/myqemu", Arch.AARCH64, "qemu-system-aarch64"),
])
def test_qemu_binary_for_the_guest_architecture(binary: str, arch: Arch, expected: str) -> None:
    host = HostInfo(os=HostOS.LINUX, arch=Arch.X86_64, qemu_binary=binary)
    assert qemu_binary_for(host, arch) == expected


def test_hardware_accel_for_foreign_arch_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"cannot run"):
        argv(Accel.HVF, MAC, arch=Arch.X86_64)
    # emulating another architecture under TCG is allowed
    assert option(argv(Accel.TCG, MAC, arch=Arch.X86_64), "-machine") == ["q35"]


def test_fixed_flags() -> None:
    args = argv()
    for flag in ("-nodefaults", "-no-user-config", "-nographic", "-no-reboot"):
        assert args.count(flag) == 1
    assert option(args, "-name") == ["pydesk-default"]
    assert option(args, "-pidfile") == ["/i/qemu.pid"]
    assert "-L" not in args
    assert "-enable-kvm" not in args and "-daemonize" not in args


def test_cpus_and_memory() -> None:
    args = argv(cpus=4, memory_mib=3072)
    assert option(args, "-smp") == ["4"]
    assert option(args, "-m") == ["3072M"]


def test_kernel_and_cmdline_from_contract() -> None:
    args = argv()
    assert option(args, "-kernel") == ["/img/vmlinuz"]
    assert option(args, "-initrd") == ["/img/initrd.img"]
    assert option(args, "-append") == [" ".join(vmcontract.KERNEL_CMDLINE)]
    assert "panic=-1" in kernel_cmdline(VmConfig())


def test_disks() -> None:
    drives = option(argv(), "-drive")
    devices = option(argv(), "-device")
    root, data = drives
    assert "file=/img/rootfs.erofs" in root and "readonly=on" in root and "format=raw" in root
    assert "file=/i/data.qcow2" in data and "format=qcow2" in data
    assert "discard=unmap" in data and "detect-zeroes=unmap" in data
    for drive in drives:
        assert "cache=writeback" in drive and "unsafe" not in drive and "if=none" in drive
    assert f"virtio-blk-pci,drive=root,serial={vmcontract.ROOT_DISK_SERIAL}" in devices
    assert f"virtio-blk-pci,drive=data,serial={vmcontract.DATA_DISK_SERIAL}" in devices
    assert "discard" not in root


def test_network_forwards_only_ssh_on_loopback() -> None:
    args = argv()
    (netdev,) = option(args, "-netdev")
    assert netdev == "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22"
    assert "restrict" not in netdev and "0.0.0.0" not in netdev and "guestfwd" not in netdev
    assert "virtio-net-pci,netdev=net0,romfile=" in option(args, "-device")
    with pytest.raises(InvalidArgument):
        qemu_argv(VmConfig(), X86, FILES, 0)


def test_rng_balloon_console_qmp_fwcfg() -> None:
    args = argv()
    devices = option(args, "-device")
    assert "virtio-rng-pci" in devices
    assert "virtio-balloon-pci,id=balloon0,free-page-reporting=on" in devices
    chardevs = option(args, "-chardev")
    assert "file,id=console,path=/i/console.log" in chardevs
    assert option(args, "-serial") == ["chardev:console"]
    assert "socket,id=qmp,path=/i/qmp.sock,server=on,wait=off" in chardevs
    assert option(args, "-mon") == ["chardev=qmp,mode=control"]
    assert "-qmp" not in args and "tcp:" not in " ".join(chardevs)
    assert option(args, "-fw_cfg") == [
        f"name={vmcontract.FW_CFG_CONFIG},file=/i/guest-config.json"]


def test_firmware_dirs_and_windows_paths() -> None:
    args = argv(Accel.WHPX, WIN)
    assert args[0] == "C:/qemu/qemu-system-x86_64.exe"
    assert option(args, "-L") == ["C:/qemu/share"]


def test_commas_in_paths_are_escaped() -> None:
    files = LaunchFiles(**{**FILES.__dict__, "data_disk": Path("/a,b/data.qcow2")})
    (_, data) = option(qemu_argv(VmConfig(), X86, files, 2222), "-drive")
    assert "file=/a,,b/data.qcow2," in data


def test_config_validation() -> None:
    with pytest.raises(InvalidArgument):
        VmConfig(name="Bad Name")
    with pytest.raises(InvalidArgument):
        VmConfig(cpus=0)
    with pytest.raises(InvalidArgument):
        VmConfig(memory_mib=64)
    with pytest.raises(InvalidArgument):
        VmConfig(disk_gib=0)
    config = VmConfig(name="dev-1", cpus=3, accel=Accel.KVM)
    assert VmConfig.from_json(config.to_json()) == config


def test_qboot_for_x86_guests_only() -> None:
    assert "-bios" not in argv()
    fast = HostInfo(os=HostOS.LINUX, arch=Arch.X86_64, qemu_binary="q",
                    x86_bios="/usr/share/qemu/qboot.rom")
    assert option(argv(host=fast), "-bios") == ["/usr/share/qemu/qboot.rom"]
    arm = HostInfo(os=HostOS.MACOS, arch=Arch.AARCH64, qemu_binary="q", x86_bios="/q/qboot.rom",
                   aarch64_firmware="/q/edk2-aarch64-code.fd")
    assert option(argv(Accel.HVF, arm), "-bios") == ["/q/edk2-aarch64-code.fd"]
    assert option(argv(Accel.TCG, arm, arch=Arch.X86_64), "-bios") == ["/q/qboot.rom"]


def test_find_qboot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydesk.vm.config import find_qboot

    (tmp_path / "bin").mkdir()
    (tmp_path / "share" / "qemu").mkdir(parents=True)
    qemu = tmp_path / "bin" / "qemu-system-x86_64"
    qemu.write_text("")
    monkeypatch.delenv("PYDESK_QEMU_BIOS", raising=False)
    (tmp_path / "share" / "qemu" / "qboot.rom").write_bytes(b"rom")
    assert find_qboot(str(qemu)) == str(tmp_path / "share" / "qemu" / "qboot.rom")
    monkeypatch.setenv("PYDESK_QEMU_BIOS", "")
    assert find_qboot(str(qemu)) is None


def test_control_port_is_a_named_virtserialport_on_a_unix_socket() -> None:
    args = argv()
    assert "socket,id=ctl,path=/i/ctl.sock,server=on,wait=off" in option(args, "-chardev")
    devices = option(args, "-device")
    assert "virtio-serial-pci,id=vser0" in devices
    assert f"virtserialport,chardev=ctl,name={vmcontract.CTL_PORT_NAME}" in devices
    assert not any("vmgenid" in d for d in devices)  # qboot hangs with it (module docstring)
    assert "-incoming" not in args


def test_incoming_waits_for_a_migration_and_changes_nothing_else() -> None:
    config = VmConfig(accel=Accel.TCG, arch=X86.arch)
    cold = qemu_argv(config, X86, FILES, 2222)
    resumed = qemu_argv(config, X86, FILES, 2222, incoming=True)
    assert resumed == [*cold, "-incoming", "defer"]
