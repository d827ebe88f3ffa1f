"""The saved VM state: its key, its record, save/load through a recording QMP, the control port."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path
from typing import Any, cast

import pytest

from pydesk.vm import resume
from pydesk.vm.config import Accel, Arch, HostInfo, HostOS, VmConfig
from pydesk.vm.instance import InstanceFiles
from pydesk.vm.qemu import LaunchFiles, qemu_argv
from pydesk.vm.qmp import Qmp, QmpError
from pydeskd import vmcontract

HOST = HostInfo(os=HostOS.LINUX, arch=Arch.X86_64, qemu_binary="/usr/bin/qemu-system-x86_64")


def argv_for(files: InstanceFiles, port: int, incoming: bool = False,
             memory_mib: int = 2048) -> list[str]:
    image = Path("/img")
    return qemu_argv(VmConfig(accel=Accel.TCG, arch=Arch.X86_64, memory_mib=memory_mib), HOST,
                     LaunchFiles(image / "vmlinuz", image / "initrd.img", image / "rootfs.erofs",
                                 files.data_disk, files.console_log, files.qmp_socket,
                                 files.qemu_pid, files.guest_config, files.ctl_socket),
                     port, incoming=incoming)


def key(files: InstanceFiles, port: int = 2222, **changes: Any) -> str:
    values: dict[str, Any] = {"image_info": b'{"files": {"vmlinuz": "aa"}}',
                              "argv": argv_for(files, port), "ssh_port": port,
                              "qemu_identity": "QEMU emulator version 7.2.19 /q 1:2",
                              "guest_config": b'{"instance": "default"}', "disk_bytes": 8 << 30}
    values.update(changes)
    return resume.resume_key(**values)


def test_the_key_ignores_the_ssh_port_and_incoming_but_nothing_else() -> None:
    files = InstanceFiles(Path("/h/default"))
    base = key(files)
    assert key(files, port=40001, argv=argv_for(files, 40001, incoming=True)) == base
    different = [key(files, image_info=b'{"files": {"vmlinuz": "bb"}}'),
                 key(files, argv=argv_for(files, 2222, memory_mib=1024)),
                 key(files, qemu_identity="QEMU emulator version 8.2.0 /q 1:2"),
                 key(files, guest_config=b'{"instance": "default", "daemon_json": "{}"}'),
                 key(files, disk_bytes=16 << 30)]
    assert len({base, *different}) == 6


def test_stable_argv_replaces_only_the_ssh_forward_port() -> None:
    files = InstanceFiles(Path("/h/default"))
    stable = resume.stable_argv(argv_for(files, 40001, incoming=True), 40001)
    assert "-incoming" not in stable
    netdev = stable[stable.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:SSH_PORT-:22" in netdev
    assert not any("40001" in a for a in stable)
    assert stable == resume.stable_argv(argv_for(files, 2222), 2222)


def test_qcow2_virtual_size() -> None:
    header = b"QFI\xfb" + bytes(20) + struct.pack(">Q", 4 << 30) + bytes(8)
    assert resume.qcow2_virtual_size(header) == 4 << 30
    for bad in (b"", header[:20], b"RAW!" + header[4:]):
        with pytest.raises(ValueError):
            resume.qcow2_virtual_size(bad)


def test_qemu_identity_names_version_binary_and_its_stamp(tmp_path: Path) -> None:
    binary = tmp_path / "qemu"
    binary.write_bytes(b"x" * 10)
    ident = resume.qemu_identity(str(binary), "QEMU emulator version 7.2.19\nCopyright\n")
    assert ident.startswith("QEMU emulator version 7.2.19 " + str(binary) + " 10:")
    assert resume.qemu_identity("/nonexistent", "").endswith("?")


def test_key_for_launch_reads_the_disk_image_and_config(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path / "default")
    files.dir.mkdir()
    image = tmp_path / "img"
    image.mkdir()
    (image / vmcontract.IMAGE_INFO_FILE).write_text('{"files": {}}')
    files.guest_config.write_text('{"instance": "default"}')
    files.data_disk.write_bytes(b"QFI\xfb" + bytes(20) + struct.pack(">Q", 4 << 30) + bytes(8))
    argv = argv_for(files, 2222)
    first = resume.key_for_launch(files, image, argv, 2222, "QEMU 7.2")
    assert first == resume.key_for_launch(files, image, argv_for(files, 3333, True), 3333,
                                          "QEMU 7.2")
    files.data_disk.write_bytes(b"QFI\xfb" + bytes(20) + struct.pack(">Q", 8 << 30) + bytes(8))
    assert resume.key_for_launch(files, image, argv, 2222, "QEMU 7.2") != first


def saved(files: InstanceFiles, key_value: str, data: bytes = b"state") -> None:
    files.resume_state.write_bytes(data)
    files.resume_meta.write_text(json.dumps(resume.SavedState(key_value, len(data), 1.0, 2.0)
                                            .to_json()))


def test_check_saved_says_why_not(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    assert resume.check_saved(files, "k") == (False, "no saved VM state yet")
    saved(files, "k")
    assert resume.check_saved(files, "k")[0]
    usable, why = resume.check_saved(files, "other")
    assert not usable and "another image" in why
    files.resume_state.write_bytes(b"stat")  # truncated
    usable, why = resume.check_saved(files, "k")
    assert not usable and "damaged" in why
    files.resume_state.unlink()
    assert "missing" in resume.check_saved(files, "k")[1]
    files.resume_meta.write_text("{not json")
    assert "unreadable" in resume.check_saved(files, "k")[1]
    files.resume_meta.write_text(json.dumps({"format": 99, "key": "k"}))
    assert "unreadable" in resume.check_saved(files, "k")[1]


class FakeQmp:
    """Records commands; ``migrate`` and ``migrate-incoming`` run the exec: URI's shell command
    (cat), as QEMU would, writing or reading ``payload``."""

    def __init__(self, statuses: list[str], payload: bytes = b"RAM" * 100,
                 fail: str = "") -> None:
        self.calls: list[str] = []
        self.statuses = statuses
        self.payload = payload
        self.fail = fail
        self.loaded = b""

    def _record(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise QmpError(f"QMP {name}: refused")

    def stop(self) -> None:
        self._record("stop")

    def cont(self) -> None:
        self._record("cont")

    def migrate(self, uri: str) -> None:
        self._record("migrate")
        assert uri.startswith("exec:cat > ")
        target = uri[len("exec:cat > "):].strip("'")
        Path(target).write_bytes(self.payload)  # as cat truncates: the mode stays

    def migrate_incoming(self, uri: str) -> None:
        self._record("migrate-incoming")
        assert uri.startswith("exec:cat ")
        self.loaded = Path(uri[len("exec:cat "):].strip("'")).read_bytes()

    def query_migrate(self) -> dict[str, Any]:
        self._record("query-migrate")
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"status": status, "error-desc": "bad section"} if status == "failed" else \
            {"status": status}


def test_save_stops_writes_private_renames_and_continues(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    qmp = FakeQmp(["active", "active", "completed"])
    record = resume.save(cast(Qmp, qmp), files, "k")
    assert qmp.calls[0] == "stop" and qmp.calls[1] == "migrate" and qmp.calls[-1] == "cont"
    assert files.resume_state.read_bytes() == qmp.payload
    assert files.resume_state.stat().st_mode & 0o777 == 0o600
    assert files.resume_meta.stat().st_mode & 0o777 == 0o600
    assert record.size == len(qmp.payload) and record.key == "k"
    assert resume.check_saved(files, "k")[0]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_failed_save_continues_the_vm_and_leaves_nothing(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    saved(files, "old")
    qmp = FakeQmp(["failed"])
    with pytest.raises(resume.ResumeError, match="bad section"):
        resume.save(cast(Qmp, qmp), files, "k")
    assert qmp.calls[-1] == "cont"
    assert not files.resume_state.exists() and not files.resume_meta.exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_load_reads_the_file_waits_and_continues(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    saved(files, "k", b"the state")
    qmp = FakeQmp(["active", "completed"])
    resume.load(cast(Qmp, qmp), files, lambda: True)
    assert qmp.loaded == b"the state"
    assert qmp.calls == ["migrate-incoming", "query-migrate", "query-migrate", "cont"]


@pytest.mark.parametrize("statuses,alive,fail,match", [
    (["failed"], True, "", "bad section"),
    (["active"], False, "", "QEMU exited"),
    (["completed"], True, "cont", "refused"),
])
def test_load_failures_raise_resume_error(tmp_path: Path, statuses: list[str], alive: bool,
                                          fail: str, match: str) -> None:
    files = InstanceFiles(tmp_path)
    saved(files, "k")
    with pytest.raises(resume.ResumeError, match=match):
        resume.load(cast(Qmp, FakeQmp(statuses, fail=fail)), files, lambda: alive)


def test_load_times_out(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    saved(files, "k")
    with pytest.raises(resume.ResumeError, match="not done after"):
        resume.load(cast(Qmp, FakeQmp(["active"])), files, lambda: True, timeout=0.2)


def test_discard_removes_state_record_and_temp(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    saved(files, "k")
    (tmp_path / "resume.state.tmp").write_bytes(b"x")
    resume.discard(files)
    assert not os.listdir(tmp_path)


def test_control_port_lines_and_go() -> None:
    host, guest = socket.socketpair()
    port = resume.CtlPort(host)
    try:
        assert port.lines(0.05) == []
        assert port.lines(0.0) == []  # a poll: non-blocking, nothing there is not an error
        guest.sendall(b"at-snap")
        assert port.lines(1) == []
        guest.sendall(b"shot-point\nat-snapshot-point\npartial")
        assert port.lines(1) == [vmcontract.CTL_AT_SNAPSHOT_POINT] * 2
        port.send_go()
        guest.settimeout(1)
        go = vmcontract.GoLine.parse(guest.recv(4096))
        assert go is not None and len(go.entropy) == vmcontract.GO_ENTROPY_BYTES
        import time
        assert abs(go.time_ns - time.time_ns()) < 2 * 10**9
        port.send_go()
        assert vmcontract.GoLine.parse(guest.recv(4096)) != go  # fresh entropy each time
        guest.close()
        with pytest.raises(resume.ResumeError, match="closed"):
            port.lines(1)
    finally:
        port.close()
        guest.close()


def test_control_port_connect_gives_up_when_qemu_is_gone(tmp_path: Path) -> None:
    with pytest.raises(resume.ResumeError, match="control port"):
        resume.CtlPort.connect(tmp_path / "nothing.sock", 5, lambda: False)
