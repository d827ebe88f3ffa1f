"""The QEMU command line as a pure function of the VM's configuration and the host.

What it is for: :func:`qemu_argv` turns a :class:`VmConfig`, a :class:`HostInfo` and the files of
one launch (:class:`LaunchFiles`) into QEMU's argv, so every flag is unit-tested without QEMU.
What it must never do: touch the file system, spawn anything, or pick the accelerator itself (the
probe in ``accel.py`` does, with a timeout: KVM can hang).

Choices, and why:
- ``-nodefaults -no-user-config``: no device or config file we did not name (no VGA, no NIC).
- ``-no-reboot`` with the guest's ``panic=-1``: a panicking guest makes QEMU exit, so the agent
  sees it, instead of a VM that reboots in a loop.
- Disks are virtio-blk found by serial (vmcontract). The data disk is qcow2 with
  ``cache=writeback``: QEMU honours the guest's flushes (virtio-blk advertises its write cache), so
  whatever the guest fsync'ed survives QEMU being killed (it is in the host's page cache or on
  disk); never ``cache=unsafe``. ``discard=unmap,detect-zeroes=unmap`` give freed blocks back to
  the host.
- User-mode networking (no root on the host) with one forward, the guest's sshd, bound to
  127.0.0.1 only; guest egress stays on (pulls), ``restrict`` is not used.
- Serial console to a file through a chardev, QMP on a unix socket (never TCP).
- A virtio-serial control port (vmcontract.CTL_PORT_NAME) on a unix socket: the guest's
  snapshot-point handshake (``pydesk.vm.resume``). ``incoming=True`` adds ``-incoming defer``:
  the VM's state is then loaded from a saved file through QMP ``migrate-incoming``; every other
  argument must be the same as when the state was saved (the ssh forward port may differ: slirp
  re-creates command-line forwards). No ``vmgenid`` device: qboot (our x86 firmware) hangs with
  it, and Debian's cloud kernel has no driver for it; the go line reseeds the guest instead.
- aarch64 guests: the ``virt`` machine with UEFI firmware (edk2, ``-bios``), which boots the
  ``-kernel`` through its EFI stub and gives the guest ACPI tables. ACPI matters for power-off:
  QMP ``system_powerdown`` then presses an ACPI power button (PNP0C0C, "Power Button"), the same
  input device the guest init watches on ``q35``; without firmware the kernel gets a device tree
  whose power key is a gpio-keys device, and Debian's cloud-arm64 kernel has no driver for it.
  The firmware costs about 1 s under TCG (measured: launch -> kernel panic without root 7.2 s).
  The PL011 UART is the console (ttyAMA0, also named by ACPI's SPCR); fw_cfg exists on ``virt``
  (ACPI device QEMU0002, the same ``qemu_fw_cfg`` module); the devices are the same virtio-pci
  ones (``virt`` has a PCIe host bridge). Under TCG ``-cpu max,pauth-impdef=on``: QEMU's
  architected pointer-authentication algorithm (QARMA) costs a large share of emulated time; the
  implementation-defined one is much cheaper and the guest cannot tell. An aarch64 guest on an
  x86_64 host (or the reverse) runs QEMU's emulator of that architecture, found beside the
  host's one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydesk.vm.config import Accel, Arch, HostInfo, VmConfig
from pydesk.vm.errors import InvalidArgument
from pydeskd.vmcontract import (
    CTL_PORT_NAME,
    DATA_DISK_SERIAL,
    FW_CFG_CONFIG,
    GUEST_SSH_PORT,
    HOST_FORWARD_ADDRESS,
    KERNEL_CMDLINE,
    ROOT_DISK_SERIAL,
)

SERIAL_CONSOLE = {Arch.X86_64: "ttyS0", Arch.AARCH64: "ttyAMA0"}
"""The first serial port's name in the guest: the 16550 on x86 (ttyS0), the PL011 on arm virt."""


@dataclass(frozen=True)
class LaunchFiles:
    """The files one QEMU launch reads and writes: the image's three, and the instance's."""

    kernel: Path
    initrd: Path
    rootfs: Path
    data_disk: Path
    console_log: Path
    qmp_socket: Path
    pidfile: Path
    guest_config: Path
    ctl_socket: Path


def machine_args(config: VmConfig, host: HostInfo) -> list[str]:
    """``-machine``, ``-accel``, ``-cpu``: the host CPU model only with a hardware accelerator."""
    if config.accel.hardware and config.arch is not host.arch:
        raise InvalidArgument(f"{config.accel} cannot run an {config.arch} guest on an "
                              f"{host.arch} host", hint="use --accel tcg")
    if config.arch is Arch.X86_64:
        machine = "q35"
    else:
        # gic-version=max: GICv3 when the accelerator has it (hvf on recent QEMU, kvm, tcg).
        machine = "virt,gic-version=max" if config.accel is not Accel.HVF else "virt"
    accel = "tcg,thread=multi" if config.accel is Accel.TCG else config.accel.value
    cpu = "host" if config.accel.hardware else "max"
    if cpu == "max" and config.arch is Arch.AARCH64:
        cpu = "max,pauth-impdef=on"
    return ["-machine", machine, "-accel", accel, "-cpu", cpu]


QEMU_SYSTEM = {Arch.X86_64: "qemu-system-x86_64", Arch.AARCH64: "qemu-system-aarch64"}


def qemu_binary_for(host: HostInfo, arch: Arch) -> str:
    """QEMU's system emulator for ``arch``: the host's own when the architectures match, else
    the one of the same name pattern in the same directory (QEMU installs them side by side)."""
    if arch is host.arch:
        return host.qemu_binary
    own = QEMU_SYSTEM[host.arch]
    base = host.qemu_binary.replace("\\", "/").rsplit("/", 1)[-1]
    if own not in base:
        return QEMU_SYSTEM[arch]  # a renamed binary: look the emulator up on PATH
    cut = len(host.qemu_binary) - len(base)
    return host.qemu_binary[:cut] + base.replace(own, QEMU_SYSTEM[arch])


def kernel_cmdline(config: VmConfig) -> str:
    """The contract's command line, with the serial console this architecture names."""
    console = SERIAL_CONSOLE[config.arch]
    parts = [f"console={console}" if p.startswith("console=") else p for p in KERNEL_CMDLINE]
    return " ".join(parts)


def drive_args(files: LaunchFiles) -> list[str]:
    """The read-only root image and the qcow2 data disk, as virtio-blk devices with serials."""
    root = (f"if=none,id=root,file={_opt(files.rootfs)},format=raw,readonly=on,"
            "cache=writeback")
    data = (f"if=none,id=data,file={_opt(files.data_disk)},format=qcow2,cache=writeback,"
            "discard=unmap,detect-zeroes=unmap")
    return ["-drive", root, "-device", f"virtio-blk-pci,drive=root,serial={ROOT_DISK_SERIAL}",
            "-drive", data, "-device", f"virtio-blk-pci,drive=data,serial={DATA_DISK_SERIAL}"]


USER_NETDEV_ID = "net0"
"""The user-mode network backend's id: QMP's ``hostfwd_add``/``hostfwd_remove`` name it."""


def network_args(ssh_port: int) -> list[str]:
    """User-mode networking; only the guest's sshd is forwarded, from 127.0.0.1:ssh_port."""
    if not 0 < ssh_port < 65536:
        raise InvalidArgument(f"invalid SSH forward port {ssh_port}")
    forward = f"tcp:{HOST_FORWARD_ADDRESS}:{ssh_port}-:{GUEST_SSH_PORT}"
    return ["-netdev", f"user,id={USER_NETDEV_ID},hostfwd={forward}",
            # romfile=: no iPXE option ROM (we boot a kernel directly; it costs boot time).
            "-device", f"virtio-net-pci,netdev={USER_NETDEV_ID},romfile="]


CTL_CHARDEV_ID = "ctl"


def ctl_args(ctl_socket: Path) -> list[str]:
    """The control port: a virtserialport on a unix-socket chardev that the agent connects to."""
    return ["-chardev", f"socket,id={CTL_CHARDEV_ID},path={_opt(ctl_socket)},server=on,wait=off",
            "-device", "virtio-serial-pci,id=vser0",
            "-device", f"virtserialport,chardev={CTL_CHARDEV_ID},name={CTL_PORT_NAME}"]


INCOMING_ARGS = ("-incoming", "defer")


def qemu_argv(config: VmConfig, host: HostInfo, files: LaunchFiles, ssh_port: int, *,
              incoming: bool = False) -> list[str]:
    """QEMU's full argv for ``config`` on ``host``; raises InvalidArgument for impossible combos.
    ``incoming``: QEMU waits for ``migrate-incoming`` (a resume) instead of booting."""
    argv = [qemu_binary_for(host, config.arch), "-name", f"pydesk-{config.name}"]
    for directory in host.firmware_dirs:
        argv += ["-L", directory]
    argv += machine_args(config, host)
    if config.arch is Arch.X86_64 and host.x86_bios:
        argv += ["-bios", host.x86_bios]
    if config.arch is Arch.AARCH64:
        if not host.aarch64_firmware:
            raise InvalidArgument(
                "no UEFI firmware for aarch64 guests (without it the guest cannot be powered "
                "off cleanly)", hint="install qemu-efi-aarch64 (Debian/Ubuntu) or a QEMU that "
                "ships edk2-aarch64-code.fd, or set PYDESK_QEMU_AARCH64_FIRMWARE")
        argv += ["-bios", host.aarch64_firmware]
    argv += ["-smp", str(config.cpus), "-m", f"{config.memory_mib}M"]
    argv += ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]
    argv += ["-kernel", str(files.kernel), "-initrd", str(files.initrd),
             "-append", kernel_cmdline(config)]
    argv += drive_args(files)
    argv += network_args(ssh_port)
    argv += ["-device", "virtio-rng-pci",
             # free-page-reporting: pages the guest frees go back to the host by themselves.
             "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"]
    argv += ["-chardev", f"file,id=console,path={_opt(files.console_log)}",
             "-serial", "chardev:console"]
    argv += ["-chardev", f"socket,id=qmp,path={_opt(files.qmp_socket)},server=on,wait=off",
             "-mon", "chardev=qmp,mode=control"]
    argv += ["-fw_cfg", f"name={FW_CFG_CONFIG},file={_opt(files.guest_config)}"]
    argv += ctl_args(files.ctl_socket)
    argv += ["-pidfile", str(files.pidfile)]
    if incoming:
        argv += INCOMING_ARGS
    return argv


def _opt(path: Path) -> str:
    """A path inside a QEMU option string: commas are doubled (QemuOpts' escape)."""
    return str(path).replace(",", ",,")
