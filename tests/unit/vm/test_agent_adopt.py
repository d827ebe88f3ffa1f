"""Which running QEMU a new agent may adopt, and what it reads from its command line."""

from __future__ import annotations

from pathlib import Path

from pydesk.agent.qemuproc import adoptable, ssh_port_of
from pydesk.vm.instance import InstanceFiles
from tests.unit.vm.test_resume import argv_for

FILES = InstanceFiles(Path("/h/default"))
BINARY = "/usr/bin/qemu-system-x86_64"


def test_our_qemu_is_adoptable() -> None:
    assert adoptable(argv_for(FILES, 40001), FILES, BINARY)
    assert adoptable(argv_for(FILES, 40001, incoming=True), FILES, BINARY)
    # found through another path to the same program (a symlink, PATH): same name
    assert adoptable(["qemu-system-x86_64", *argv_for(FILES, 1)[1:]], FILES, BINARY)


def test_another_instance_or_program_is_not() -> None:
    other = InstanceFiles(Path("/h/other"))
    assert not adoptable(argv_for(other, 40001), FILES, BINARY)
    assert not adoptable(argv_for(FILES, 40001), FILES, "/usr/bin/qemu-system-aarch64")
    assert not adoptable(["/usr/bin/python3", "-c", f"path={FILES.qmp_socket},",
                          str(FILES.qemu_pid)], FILES, BINARY)
    assert not adoptable([], FILES, BINARY)
    # the same sockets in a prefix directory (/h/default2) are not ours either
    prefixed = InstanceFiles(Path("/h/default2"))
    assert not adoptable(argv_for(prefixed, 1), FILES, BINARY)


def test_ssh_port_from_the_hostfwd() -> None:
    assert ssh_port_of(argv_for(FILES, 40001)) == 40001
    assert ssh_port_of(["qemu", "-netdev", "user,id=net0"]) == 0
    assert ssh_port_of(["qemu", "-netdev", "user,hostfwd=tcp:127.0.0.1:x-:22"]) == 0
