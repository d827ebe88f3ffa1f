"""The VM's configuration and the host's description: the two inputs of the QEMU command line.

What it is for: :class:`VmConfig` (what the user asked for, persisted as the instance's
config.json) and :class:`HostInfo` (what this machine is and where QEMU lives), both frozen, so
``qemu.qemu_argv`` is a pure function of them. :func:`detect_host` is the only impure part.
What it must never do: import a Linux-only module, or start QEMU.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from pydesk.vm.errors import InvalidArgument, NotFound


class Accel(StrEnum):
    """QEMU accelerators. Only TCG needs nothing from the host (and is slow)."""

    KVM = "kvm"
    HVF = "hvf"
    WHPX = "whpx"
    TCG = "tcg"

    @property
    def hardware(self) -> bool:
        return self is not Accel.TCG


class Arch(StrEnum):
    X86_64 = "x86_64"
    AARCH64 = "aarch64"


class HostOS(StrEnum):
    LINUX = "linux"
    MACOS = "darwin"
    WINDOWS = "windows"


NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}\Z")
MIN_MEMORY_MIB = 256
MIN_DISK_GIB = 1


@dataclass(frozen=True)
class VmConfig:
    """What one VM instance is made of; persisted as the instance's config.json."""

    name: str = "default"
    cpus: int = 2
    memory_mib: int = 2048
    disk_gib: int = 64
    accel: Accel = Accel.TCG
    arch: Arch = Arch.X86_64
    stop_timeout: float = 30.0
    """Seconds the guest gets to power off after ACPI power-down before QEMU is told to quit."""
    daemon_json: str = "{}"
    """The guest pydeskd's daemon.json (e.g. insecure-registries), passed through fw_cfg."""

    def __post_init__(self) -> None:
        validate_name(self.name)
        if self.cpus < 1:
            raise InvalidArgument(f"--cpus must be at least 1, not {self.cpus}")
        if self.memory_mib < MIN_MEMORY_MIB:
            raise InvalidArgument(f"--memory must be at least {MIN_MEMORY_MIB} MiB, "
                                  f"not {self.memory_mib}")
        if self.disk_gib < MIN_DISK_GIB:
            raise InvalidArgument(f"--disk-size must be at least {MIN_DISK_GIB} GiB")

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> VmConfig:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["accel"] = Accel(str(values.get("accel", "tcg")))
        values["arch"] = Arch(str(values.get("arch", "x86_64")))
        return cls(**values)  # type: ignore[arg-type]


def validate_name(name: str) -> str:
    """Returns ``name`` if it can name an instance (a directory, a hostname); else raises."""
    if not NAME_RE.match(name):
        raise InvalidArgument(f"invalid VM name {name!r}",
                              hint="use lowercase letters, digits and '-', at most 31 characters")
    return name


@dataclass(frozen=True)
class HostInfo:
    """The machine QEMU runs on: OS, CPU architecture, QEMU programs and firmware."""

    os: HostOS
    arch: Arch
    qemu_binary: str
    qemu_img: str = "qemu-img"
    firmware_dirs: tuple[str, ...] = field(default=())
    """Extra QEMU data directories (``-L``): firmware (SeaBIOS, EDK2) when QEMU cannot find its own,
    e.g. a QEMU unpacked without its share/ directory."""
    x86_bios: str | None = None
    """Firmware for x86_64 guests (``-bios``): QEMU's qboot when it ships one, a minimal firmware
    that only boots a kernel (measured here under TCG: /init reached 0.8 s sooner than with the
    default SeaBIOS). None: QEMU's default."""
    aarch64_firmware: str | None = None
    """UEFI firmware (edk2) for aarch64 guests (``-bios``): it gives the ``virt`` machine ACPI,
    whose power button the guest's cloud kernel drives (without firmware the kernel gets a
    device tree, whose gpio-keys power key that kernel has no driver for). None: not found."""


def host_arch(machine: str | None = None) -> Arch:
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "x64"):
        return Arch.X86_64
    if machine in ("arm64", "aarch64"):
        return Arch.AARCH64
    raise InvalidArgument(f"unsupported host CPU {machine!r}",
                          hint="pydesk runs on x86_64 or arm64")


def host_os(name: str | None = None) -> HostOS:
    name = name or sys.platform
    if name.startswith("linux"):
        return HostOS.LINUX
    if name == "darwin":
        return HostOS.MACOS
    if name in ("win32", "cygwin"):
        return HostOS.WINDOWS
    raise InvalidArgument(f"unsupported host OS {name!r}")


def detect_host() -> HostInfo:
    """Describes this machine; raises NotFound when no QEMU for its architecture is installed.

    ``PYDESK_QEMU`` (a path to qemu-system-*) and ``PYDESK_QEMU_IMG`` override the PATH lookup.
    """
    arch = host_arch()
    wanted = f"qemu-system-{arch.value}"
    qemu = os.environ.get("PYDESK_QEMU") or shutil.which(wanted)
    if not qemu:
        raise NotFound(f"{wanted} not found on PATH",
                       hint="install QEMU (apt install qemu-system-x86 qemu-utils, "
                            "brew install qemu, or set PYDESK_QEMU)")
    qemu_img = os.environ.get("PYDESK_QEMU_IMG") or shutil.which("qemu-img")
    if not qemu_img:
        sibling = Path(qemu).with_name("qemu-img" + Path(qemu).suffix)
        if not sibling.exists():
            raise NotFound("qemu-img not found on PATH", hint="install qemu-utils (or set "
                                                              "PYDESK_QEMU_IMG)")
        qemu_img = str(sibling)
    return HostInfo(os=host_os(), arch=arch, qemu_binary=qemu, qemu_img=qemu_img,
                    x86_bios=find_qboot(qemu), aarch64_firmware=find_aarch64_firmware(qemu))


QBOOT = "qboot.rom"


def find_qboot(qemu: str) -> str | None:
    """QEMU's qboot.rom: ``$PYDESK_QEMU_BIOS`` (empty: none), else beside QEMU's data files
    (``<prefix>/share/qemu`` on Linux and Homebrew, the program's directory on Windows)."""
    if "PYDESK_QEMU_BIOS" in os.environ:
        return os.environ["PYDESK_QEMU_BIOS"] or None
    binary = Path(shutil.which(qemu) or qemu).resolve()
    for directory in (binary.parent.parent / "share" / "qemu", binary.parent,
                      Path("/usr/share/qemu")):
        if (directory / QBOOT).is_file():
            return str(directory / QBOOT)
    return None


AARCH64_FIRMWARE = (
    "edk2-aarch64-code.fd",  # QEMU's own share/qemu (Homebrew, upstream installs, Windows)
    "../qemu-efi-aarch64/QEMU_EFI.fd",  # Debian/Ubuntu qemu-efi-aarch64, beside share/qemu
    "../AAVMF/AAVMF_CODE.fd",  # Fedora edk2-aarch64; Debian's 64 MiB variant
)


def find_aarch64_firmware(qemu: str) -> str | None:
    """UEFI firmware for aarch64 guests: ``$PYDESK_QEMU_AARCH64_FIRMWARE`` (empty: none), else
    the first of :data:`AARCH64_FIRMWARE` beside QEMU's data files."""
    if "PYDESK_QEMU_AARCH64_FIRMWARE" in os.environ:
        return os.environ["PYDESK_QEMU_AARCH64_FIRMWARE"] or None
    binary = Path(shutil.which(qemu) or qemu).resolve()
    for directory in (binary.parent.parent / "share" / "qemu", binary.parent,
                      Path("/usr/share/qemu")):
        for name in AARCH64_FIRMWARE:
            candidate = directory / name
            if candidate.is_file():
                return str(candidate.resolve())
    return None
