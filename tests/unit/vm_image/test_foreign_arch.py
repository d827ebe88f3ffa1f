"""imageforeign: binfmt_misc entries parsed, the registration line, and the context manager's
promise (reuse a serving handler, else register ours; remove only ours; unmount only if it
mounted), against a fake binfmt_misc directory. The real one is exercised by the arm64 build."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydesk.vm.imageforeign import (
    ELF_MATCHES,
    BinfmtMisc,
    ForeignArchError,
    foreign_arch,
    parse_handler,
    register_line,
    serving_handler,
)

DEBIAN_AARCH64 = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POCF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""
PYTHON = "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n"
EXTENSION = "enabled\ninterpreter /usr/bin/wine\nflags: \nextension .exe\n"


def test_parse_the_kernels_entries() -> None:
    handler = parse_handler("qemu-aarch64", DEBIAN_AARCH64)
    assert handler is not None
    assert handler.enabled and handler.flags == "POCF" and handler.offset == 0
    assert handler.magic == ELF_MATCHES["arm64"].magic
    assert parse_handler("wine", EXTENSION) is None
    disabled = parse_handler("x", DEBIAN_AARCH64.replace("enabled", "disabled"))
    assert disabled is not None and not disabled.enabled


def test_a_handler_serves_only_its_architecture() -> None:
    aarch64 = parse_handler("a", DEBIAN_AARCH64)
    python = parse_handler("p", PYTHON)
    assert aarch64 is not None and python is not None
    assert serving_handler([python, aarch64], ELF_MATCHES["arm64"]) is aarch64
    assert serving_handler([python, aarch64], ELF_MATCHES["amd64"]) is None
    assert serving_handler([python], ELF_MATCHES["arm64"]) is None


def test_register_line_escapes_magic_and_fixes_the_binary() -> None:
    line = register_line(ELF_MATCHES["arm64"], "/usr/bin/qemu-aarch64-static")
    assert line.startswith(":pydesk-qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02")
    assert line.endswith(":/usr/bin/qemu-aarch64-static:F")
    assert line.count(":") == 7
    with pytest.raises(ForeignArchError):
        register_line(ELF_MATCHES["arm64"], "/odd:path")


class FakeBinfmt(BinfmtMisc):
    """A binfmt_misc directory on tmp_path: ``register`` creates the entry as the kernel
    would; mount/unmount are recorded."""

    def __init__(self, directory: Path, *, mounted: bool = True) -> None:
        super().__init__(directory)
        self.is_mounted = mounted
        self.calls: list[str] = []

    def mounted(self) -> bool:
        return self.is_mounted

    def mount(self) -> None:
        self.calls.append("mount")
        self.is_mounted = True

    def unmount(self) -> None:
        self.calls.append("umount")

    def register(self, line: str) -> None:
        _, name, _, _, _, _, interpreter, flags = line.split(":")
        match = ELF_MATCHES["arm64"]
        (self.directory / name).write_text(
            f"enabled\ninterpreter {interpreter}\nflags: {flags}\noffset 0\n"
            f"magic {match.magic.hex()}\nmask {match.mask.hex()}\n")
        self.calls.append("register " + name)

    def unregister(self, name: str) -> None:
        (self.directory / name).unlink()
        self.calls.append("unregister " + name)


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pydesk.vm.imageforeign.os.geteuid", lambda: 0)
    monkeypatch.setattr("pydesk.vm.imageforeign.shutil.which", lambda name: f"/usr/bin/{name}")


@pytest.mark.usefixtures("as_root")
def test_registers_and_removes_its_own_handler_and_mount(tmp_path: Path) -> None:
    fake = FakeBinfmt(tmp_path, mounted=False)
    (tmp_path / "python3.11").write_text(PYTHON)
    with foreign_arch("arm64", print, fake):
        assert (tmp_path / "pydesk-qemu-aarch64").exists()
    assert fake.calls == ["mount", "register pydesk-qemu-aarch64",
                          "unregister pydesk-qemu-aarch64", "umount"]
    assert (tmp_path / "python3.11").exists()


@pytest.mark.usefixtures("as_root")
def test_reuses_a_serving_handler_and_leaves_it(tmp_path: Path) -> None:
    fake = FakeBinfmt(tmp_path)
    (tmp_path / "qemu-aarch64").write_text(DEBIAN_AARCH64)
    with pytest.raises(RuntimeError, match="boom"), foreign_arch("arm64", print, fake):
        raise RuntimeError("boom")
    assert fake.calls == []
    assert (tmp_path / "qemu-aarch64").exists()


@pytest.mark.usefixtures("as_root")
def test_a_handler_without_fix_binary_is_refused(tmp_path: Path) -> None:
    fake = FakeBinfmt(tmp_path)
    (tmp_path / "qemu-aarch64").write_text(DEBIAN_AARCH64.replace("POCF", "OC"))
    with pytest.raises(ForeignArchError, match="without the F flag"), \
            foreign_arch("arm64", print, fake):
        pass
    assert fake.calls == []


@pytest.mark.usefixtures("as_root")
def test_missing_qemu_user_says_what_to_install(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pydesk.vm.imageforeign.shutil.which", lambda name: None)
    fake = FakeBinfmt(tmp_path, mounted=False)
    with pytest.raises(ForeignArchError, match="qemu-user-static"), \
            foreign_arch("arm64", print, fake):
        pass
    assert fake.calls == ["mount", "umount"]


def test_unknown_architecture() -> None:
    with pytest.raises(ForeignArchError, match="mips"), foreign_arch("mips", print):
        pass
