"""The snapshot point of the guest init, against the recording fake of its system seam."""

from __future__ import annotations

import signal
from typing import cast

import pytest

from pydeskd import vmcontract
from pydeskd.guestinit import plan, snapshot
from pydeskd.guestinit.boot import Init
from pydeskd.guestinit.system import System
from tests.unit.vm_image.test_guestinit_boot import PYDESKD, machine
from tests.unit.vm_image.test_guestinit_plan import config_bytes

GO = vmcontract.GoLine(1_800_000_000_123_456_789, bytes(range(32)))
ANNOUNCE = (vmcontract.CTL_AT_SNAPSHOT_POINT + "\n").encode()


def test_go_line_round_trip_and_rejects() -> None:
    assert vmcontract.GoLine.parse(GO.encode()) == GO
    assert vmcontract.GoLine.parse(GO.encode().rstrip(b"\n")) == GO
    assert GO.encode() == b"go 1800000000123456789 " + bytes(range(32)).hex().encode() + b"\n"
    for bad in (b"", b"go", b"go 12", b"go x " + b"00" * 32, b"go 12 zz", b"go 12 " + b"00" * 31,
                b"stop 12 " + b"00" * 32, vmcontract.CTL_AT_SNAPSHOT_POINT.encode()):
        assert vmcontract.GoLine.parse(bad) is None, bad


def test_the_snapshot_point_is_after_the_import_and_before_sshd_and_the_data_disk() -> None:
    fake = machine(config=config_bytes()).with_ctl_port(GO.encode())
    preloaded = fake.preload()
    init = Init(cast(System, fake), preloaded)
    assert init.boot(["bridge"])
    kinds = [c[0] for c in fake.calls]
    announce = fake.calls.index(("write_port", ANNOUNCE))
    go = kinds.index("go_read")
    sshd = fake.calls.index(("spawn", tuple(plan.sshd_argv()), None))
    flush = fake.calls.index(("flush", "/dev/vdb"))
    assert fake.now >= 3.0  # the fake preloader reports its import at 3 s
    assert fake.calls.index(("open_port", "/dev/vport1p1")) < announce < go
    assert go < kinds.index("set_clock") < sshd < flush
    assert go < kinds.index("entropy") < sshd
    assert fake.clock_ns == GO.time_ns and fake.entropy == [GO.entropy]
    # configuration, network and background modules are in the snapshot; the data disk is not
    assert fake.calls.index(("spawn", ("ip", "-batch", "-"), plan.network_batch().encode())) \
        < announce
    assert fake.calls.index(("spawn", ("modprobe", "-a", "-q", "bridge"), None)) < announce
    assert not any(c[0] == "mount" and c[2] == vmcontract.DATA_MOUNT
                   for c in fake.calls[:go])
    assert init.pydeskd == preloaded.pid


def test_the_announce_repeats_until_the_host_answers() -> None:
    fake = machine(config=config_bytes()).with_ctl_port(None)
    init = Init(cast(System, fake))
    fake.pending_signals = []
    original_wait = fake.wait

    def wait(timeout: float, fds: list[int]) -> tuple[list[int], list[int]]:
        if fake.now > 5.5 and fake.host_go is None and "go_read" not in [c[0] for c in
                                                                         fake.calls]:
            fake.host_go = GO.encode()
        return original_wait(timeout, fds)

    fake.wait = wait  # type: ignore[method-assign]
    assert snapshot.pass_point(init) == GO
    assert 5 <= fake.port_written.count(ANNOUNCE) <= 8


def test_a_shutdown_while_waiting_for_go_leaves_without_starting_anything() -> None:
    fake = machine(config=config_bytes()).with_ctl_port(None)
    init = Init(cast(System, fake))
    fake.pending_signals = [signal.SIGTERM]
    assert snapshot.pass_point(init) is None
    assert "set_clock" not in [c[0] for c in fake.calls]


def test_a_power_off_at_the_snapshot_point_starts_nothing_after_it() -> None:
    fake = machine(config=config_bytes()).with_ctl_port(None)
    init = Init(cast(System, fake))
    original_wait = fake.wait

    def wait(timeout: float, fds: list[int]) -> tuple[list[int], list[int]]:
        if fake.port_written and not init.shutdown_requested:  # pressed at the snapshot point
            fake.button_presses = [plan.INPUT_EVENT.pack(0, 0, plan.EV_KEY, plan.KEY_POWER, 1)]
        return original_wait(timeout, fds)

    fake.wait = wait  # type: ignore[method-assign]
    assert not init.boot([])
    assert fake.port_written
    programs = [argv[0] for argv in fake.spawned()]
    assert "/usr/sbin/sshd" not in programs and PYDESKD not in programs
    assert not any(c[0] in ("flush", "mount") and "/dev/vdb" in c for c in fake.calls)
    init.shutdown()
    assert fake.calls[-1] == ("power_off",)


def test_a_preloader_that_never_reports_is_waited_for_a_bounded_time() -> None:
    fake = machine(config=config_bytes()).with_ctl_port(GO.encode())
    fake.imported_after = None
    init = Init(cast(System, fake), fake.preload())
    assert snapshot.pass_point(init) == GO
    assert snapshot.IMPORT_WAIT <= fake.now < snapshot.IMPORT_WAIT + 5
    assert any("not imported" in line for line in fake.lines)


def test_without_a_control_port_the_init_boots_as_before() -> None:
    fake = machine(config=config_bytes())
    init = Init(cast(System, fake))
    assert init.boot([])
    assert not any(c[0] in ("open_port", "set_clock") for c in fake.calls)
    assert PYDESKD in [argv[0] for argv in fake.spawned()]


def test_never_a_snapshot_point_once_the_data_disk_is_mounted() -> None:
    fake = machine(config=config_bytes()).with_ctl_port(GO.encode())
    init = Init(cast(System, fake))
    init.data_mounted = True
    with pytest.raises(snapshot.SnapshotPointError):
        snapshot.pass_point(init)
    assert not fake.port_written


def test_the_data_disk_cache_is_dropped_before_its_superblock_is_read() -> None:
    fake = machine(config=config_bytes())
    reads: list[str] = []
    original_read = fake.read

    def read(path: str, limit: int = 1 << 20) -> bytes:
        if path == "/dev/vdb":
            reads.append("read")
        return original_read(path, limit)

    fake.read = read  # type: ignore[method-assign]
    original_flush = fake.flush_block_device
    fake.flush_block_device = lambda d: (reads.append("flush"),  # type: ignore[method-assign]
                                         original_flush(d))[1]
    assert Init(cast(System, fake)).boot([])
    assert reads[:2] == ["flush", "read"]


def test_a_data_disk_that_cannot_be_flushed_is_not_mounted() -> None:
    fake = machine(config=config_bytes())

    def fail(device: str) -> None:
        raise OSError(5, "EIO")

    fake.flush_block_device = fail  # type: ignore[method-assign]
    init = Init(cast(System, fake))
    init.boot([])
    assert not init.data_mounted
    assert not any(c[0] == "mount" and c[2] == vmcontract.DATA_MOUNT for c in fake.calls)
