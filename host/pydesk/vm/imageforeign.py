"""Running another architecture's programs during the image build: binfmt_misc + qemu-user.

What it is for: building the arm64 guest on an x86_64 builder (or the reverse). debootstrap's
second stage, ``apt-get download`` and ``depmod`` run inside the target tree through ``chroot``,
so the kernel must hand the target's ELF binaries to ``qemu-<cpu>-static``. :func:`foreign_arch`
makes sure it does for the duration of a build: it mounts ``binfmt_misc`` if needed, reuses a
handler that already serves the architecture with the ``F`` flag (the interpreter opened at
registration, so it works inside a chroot without copying QEMU into the tree), else registers
its own, and on exit removes only what it registered and unmounts only what it mounted.

The parsing and the registration line are pure (unit-tested); :class:`BinfmtMisc` is the one
seam over ``/proc/sys/fs/binfmt_misc`` (exercised for real by the arm64 build, as root).

What it must never do: remove or change a handler it did not register, or register one without
the fix-binary flag (a chroot would not find the interpreter).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
Progress = Callable[[str], None]


class ForeignArchError(RuntimeError):
    """Another architecture's programs cannot be run here; the message says how to fix it."""


@dataclass(frozen=True)
class ElfMatch:
    """A binfmt_misc magic/mask pair (offset 0) for one architecture's ELF executables."""

    name: str
    """The handler name this module registers (``pydesk-qemu-aarch64``)."""
    magic: bytes
    mask: bytes
    interpreter: str
    """The qemu-user program, a static one (it runs inside a chroot)."""

    def matches(self, magic: bytes, mask: bytes) -> bool:
        """Whether a handler with this magic/mask (offset 0) catches our executables: our
        header passes its test in every bit its mask looks at."""
        if not magic or len(magic) > len(self.magic):
            return False
        mask = mask or b"\xff" * len(magic)
        return all((ours & k) == (theirs & k)
                   for ours, theirs, k in zip(self.magic, magic, mask, strict=False))


# ELF64 little-endian, e_type EXEC or DYN (mask 0xfe), e_machine 0xb7 (AArch64): the pattern
# Debian's qemu-user-static registers.
ELF_MATCHES = {
    "arm64": ElfMatch(
        "pydesk-qemu-aarch64",
        bytes.fromhex("7f454c460201010000000000000000000200b700"),
        bytes.fromhex("ffffffffffffff00fffffffffffffffffeffffff"),
        "qemu-aarch64-static"),
    "amd64": ElfMatch(
        "pydesk-qemu-x86_64",
        bytes.fromhex("7f454c4602010100000000000000000002003e00"),
        bytes.fromhex("fffffffffffefe00fffffffffffffffffeffffff"),
        "qemu-x86_64-static"),
}


@dataclass(frozen=True)
class Handler:
    """One ``/proc/sys/fs/binfmt_misc/<name>`` entry, parsed."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes


def parse_handler(name: str, text: str) -> Handler | None:
    """A binfmt_misc entry's text; None for an extension-matched one (``extension .x``)."""
    fields: dict[str, str] = {}
    enabled = False
    for line in text.splitlines():
        if line in ("enabled", "disabled"):
            enabled = line == "enabled"
            continue
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    if "magic" not in fields:
        return None
    return Handler(name, enabled, fields.get("interpreter", ""), fields.get("flags", ""),
                   int(fields.get("offset", "0")), bytes.fromhex(fields["magic"]),
                   bytes.fromhex(fields.get("mask", "")))


def serving_handler(handlers: list[Handler], match: ElfMatch) -> Handler | None:
    """An enabled handler that already runs ``match``'s executables, or None."""
    for handler in handlers:
        if handler.enabled and handler.offset == 0 and match.matches(handler.magic,
                                                                      handler.mask):
            return handler
    return None


def register_line(match: ElfMatch, interpreter: str) -> str:
    """The line written to ``register``: magic and mask as ``\\x`` escapes, flag F."""
    def esc(data: bytes) -> str:
        return "".join(f"\\x{b:02x}" for b in data)
    if ":" in interpreter:
        raise ForeignArchError(f"binfmt_misc cannot name an interpreter with ':': {interpreter}")
    return f":{match.name}:M:0:{esc(match.magic)}:{esc(match.mask)}:{interpreter}:F"


class BinfmtMisc:
    """The seam over binfmt_misc (root only)."""

    def __init__(self, directory: Path = BINFMT_DIR) -> None:
        self.directory = directory

    def mounted(self) -> bool:
        return (self.directory / "register").exists()

    def mount(self) -> None:
        result = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc",
                                 str(self.directory)], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise ForeignArchError(f"cannot mount binfmt_misc on {self.directory}: "
                                   f"{result.stderr.strip()}")

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.directory)], capture_output=True, check=False)

    def handlers(self) -> list[Handler]:
        out = []
        for entry in sorted(self.directory.iterdir()):
            if entry.name in ("register", "status"):
                continue
            with contextlib.suppress(OSError):
                parsed = parse_handler(entry.name, entry.read_text())
                if parsed is not None:
                    out.append(parsed)
        return out

    def register(self, line: str) -> None:
        try:
            (self.directory / "register").write_text(line)
        except OSError as e:
            raise ForeignArchError(f"cannot register a binfmt_misc handler: {e}") from None

    def unregister(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / name).write_text("-1")


@contextlib.contextmanager
def foreign_arch(arch: str, progress: Progress,
                 binfmt: BinfmtMisc | None = None) -> Iterator[None]:
    """Inside: ``arch``'s executables run (through qemu-user). Raises ForeignArchError."""
    match = ELF_MATCHES.get(arch)
    if match is None:
        raise ForeignArchError(f"no qemu-user handler known for {arch}")
    binfmt = binfmt or BinfmtMisc()
    mounted_here = False
    registered = False
    if os.geteuid() != 0:
        raise ForeignArchError("binfmt_misc needs root")
    try:
        if not binfmt.mounted():
            binfmt.mount()
            mounted_here = True
        existing = serving_handler(binfmt.handlers(), match)
        if existing is not None:
            if "F" not in existing.flags:
                raise ForeignArchError(
                    f"binfmt_misc handler {existing.name} runs {arch} programs without the F "
                    "flag: a chroot would not find its interpreter (disable it, or register it "
                    "with fix_binary)")
            progress(f"{arch} programs run through {existing.interpreter} "
                     f"(binfmt_misc {existing.name})")
        else:
            interpreter = shutil.which(match.interpreter)
            if interpreter is None:
                raise ForeignArchError(f"{match.interpreter} is not installed (apt-get install "
                                       f"qemu-user-static): the build runs {arch} programs")
            binfmt.register(register_line(match, interpreter))
            registered = True
            progress(f"registered binfmt_misc {match.name} -> {interpreter}")
        yield
    finally:
        if registered:
            binfmt.unregister(match.name)
        if mounted_here:
            binfmt.unmount()
