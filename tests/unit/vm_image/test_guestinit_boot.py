"""The guest init's sequence against a recording fake of its system seam."""

from __future__ import annotations

import signal
import struct
from typing import cast

from pydeskd import vmcontract
from pydeskd.guestinit import boot, plan, preload
from pydeskd.guestinit.boot import Init
from pydeskd.guestinit.system import MNT_DETACH, MS_RDONLY, MS_REMOUNT, System
from tests.unit.vm_image.fakesystem import FakeSystem
from tests.unit.vm_image.test_guestinit_plan import CLIENT_KEY, HOST_KEY, config_bytes

PYDESKD = plan.PYDESK_BIN + "/pydeskd"


def ext4_head(blocks: int, block_size: int = 4096) -> bytes:
    head = bytearray(4096)
    struct.pack_into("<I", head, 1024 + 4, blocks)
    struct.pack_into("<I", head, 1024 + 24, {1024: 0, 2048: 1, 4096: 2}[block_size])
    struct.pack_into("<H", head, 1024 + 56, plan.EXT4_MAGIC)
    return bytes(head)


def machine(*, config: bytes | None = None, data_disk: bytes | None = bytes(4096),
            disk_bytes: int = 8 << 30) -> FakeSystem:
    fake = FakeSystem()
    fake.files["/sys/fs/cgroup/cgroup.controllers"] = b"cpuset cpu io memory pids\n"
    fake.files["/sys/block/vda/serial"] = vmcontract.ROOT_DISK_SERIAL.encode()
    if config is not None:
        fake.files[plan.CONFIG_PATH] = config
    if data_disk is not None:
        fake.files["/sys/block/vdb/serial"] = vmcontract.DATA_DISK_SERIAL.encode()
        fake.files["/sys/block/vdb/size"] = str(disk_bytes // 512).encode()
        fake.files["/dev/vdb"] = data_disk
    fake.files["/sys/class/input/event0/device/name"] = b"AT Translated Set 2 keyboard\n"
    fake.files["/sys/class/input/event1/device/name"] = b"Power Button\n"
    return fake


def booted(fake: FakeSystem) -> tuple[Init, bool]:
    init = Init(cast(System, fake))
    return init, init.boot(["bridge", "veth"])


def test_first_boot_makes_the_filesystem_and_reaches_ready() -> None:
    fake = machine(config=config_bytes())
    init, ready = booted(fake)
    assert ready
    assert fake.lines[-1] == vmcontract.GUEST_SERIAL_READY
    spawned = fake.spawned()
    assert spawned[0] == ("ip", "-batch", "-")
    programs = [argv[0] for argv in spawned]
    assert programs.index("/usr/sbin/sshd") < programs.index(PYDESKD)
    assert programs.index("mkfs.ext4") < programs.index(PYDESKD)
    assert "e2fsck" not in programs and "resize2fs" not in programs
    assert ("modprobe", "-a", "-q", "bridge", "veth") in spawned
    assert ("mount", "/dev/vdb", vmcontract.DATA_MOUNT, "ext4", 0, "discard") in fake.calls
    assert ("sethostname", "pydesk-default") in fake.calls
    assert fake.files["/etc/resolv.conf"] == plan.resolv_conf().encode()
    assert fake.files[plan.AUTHORIZED_KEYS_PATH] == (CLIENT_KEY + "\n").encode()
    assert fake.files[plan.SSH_HOST_KEY_PATH] == HOST_KEY.encode()
    assert ("write", plan.SSH_HOST_KEY_PATH, 0o600) in fake.calls
    assert b"insecure-registries" in fake.files[plan.DAEMON_CONFIG_PATH]
    assert fake.files["/sys/fs/cgroup/cgroup.subtree_control"] == \
        b"+cpuset +cpu +io +memory +pids"
    assert ("open_input", "/dev/input/event1") in fake.calls
    assert init.data_mounted


def test_later_boot_checks_and_grows_the_filesystem() -> None:
    fake = machine(config=config_bytes(), data_disk=ext4_head(1 << 20), disk_bytes=8 << 30)
    _, ready = booted(fake)
    assert ready
    programs = [argv[0] for argv in fake.spawned()]
    assert "mkfs.ext4" not in programs
    assert programs.index("e2fsck") < programs.index("resize2fs") < programs.index(PYDESKD)


def test_a_filesystem_that_fits_is_not_grown() -> None:
    fake = machine(config=config_bytes(), data_disk=ext4_head(1 << 20), disk_bytes=4 << 30)
    booted(fake)
    assert "resize2fs" not in [argv[0] for argv in fake.spawned()]


def test_a_damaged_filesystem_gets_a_full_check_then_is_left_unmounted() -> None:
    fake = machine(config=config_bytes(), data_disk=ext4_head(1 << 20))
    fake.exit_codes["e2fsck"] = 4
    init, _ = booted(fake)
    assert ("e2fsck", "-f", "-y", "/dev/vdb") in fake.spawned()
    assert not init.data_mounted
    assert any("damaged" in line for line in fake.lines)


def test_no_config_still_boots_pydeskd_but_no_sshd() -> None:
    fake = machine(config=None)
    _, ready = booted(fake)
    assert ready
    assert "/usr/sbin/sshd" not in [argv[0] for argv in fake.spawned()]
    assert any("no configuration" in line for line in fake.lines)
    assert ("sethostname", "pydesk") in fake.calls


def test_bad_config_says_why() -> None:
    fake = machine(config=config_bytes(contract=7))
    booted(fake)
    assert any("contract 7" in line for line in fake.lines)


def test_pydeskd_that_exits_is_reported_with_its_log() -> None:
    fake = machine(config=config_bytes())
    fake.files[plan.PYDESKD_LOG] = b"line 1\nfailed to start daemon: boom\n"
    fake.ready_after_pings = 10**9
    init = Init(cast(System, fake))
    original = fake.spawn

    def spawn_and_die(argv: list[str], env: dict[str, str], **kw: object) -> int:
        pid = original(argv, env, **kw)  # type: ignore[arg-type]
        if argv[0] == PYDESKD:
            fake.kill(pid, signal.SIGTERM)
        return pid

    fake.spawn = spawn_and_die  # type: ignore[method-assign]
    assert not init.boot([])
    assert any("failed to start daemon: boom" in line for line in fake.lines)
    assert vmcontract.GUEST_SERIAL_READY not in fake.lines
    # The host learns it at once, with the reason, from the console.
    assert fake.lines[-1].startswith(vmcontract.GUEST_SERIAL_FAILED)
    assert plan.PYDESKD_LOG in fake.lines[-1]


def test_ready_wait_is_bounded() -> None:
    fake = machine(config=config_bytes())
    fake.ready_after_pings = 10**9
    init = Init(cast(System, fake))
    assert not init.boot([])
    assert fake.now >= boot.PING_TIMEOUT


def test_a_step_that_hangs_is_killed_at_its_timeout() -> None:
    fake = machine(config=config_bytes())
    init = Init(cast(System, fake))
    fake.running_forever = True  # type: ignore[attr-defined]
    pid_holder: list[int] = []
    original = fake.spawn

    def hang(argv: list[str], env: dict[str, str], **kw: object) -> int:
        pid = original(argv, env, **kw)  # type: ignore[arg-type]
        fake.reap()  # swallow its exit: it "runs" until killed
        fake.running[pid] = argv[0]
        pid_holder.append(pid)
        return pid

    fake.spawn = hang  # type: ignore[method-assign]
    assert init.run(["mkfs.ext4", "/dev/vdb"], timeout=3.0) is None
    assert ("kill", pid_holder[0], signal.SIGKILL) in fake.calls
    assert 3.0 <= fake.now < 10.0


def shutdown_after_boot(fake: FakeSystem) -> Init:
    init, _ = booted(fake)
    init.shutdown()
    return init


def test_power_button_shuts_down_in_order_and_says_so() -> None:
    fake = machine(config=config_bytes())
    init, _ = booted(fake)
    fake.button_presses.append(plan.INPUT_EVENT.pack(0, 0, plan.EV_KEY, plan.KEY_POWER, 1))
    init.serve()
    assert init.shutdown_requested
    before = len(fake.calls)
    init.shutdown()
    calls = fake.calls[before:]
    kills = [c for c in calls if c[0] == "kill"]
    assert kills[0] == ("kill", init.pydeskd, signal.SIGTERM)
    assert kills[1] == ("kill", init.sshd, signal.SIGTERM)
    assert ("kill", -1, signal.SIGTERM) in kills and ("kill", -1, signal.SIGKILL) in kills
    umount = calls.index(("umount", vmcontract.DATA_MOUNT, 0))
    assert ("sync",) in calls[:umount]
    assert fake.lines[-1] == vmcontract.GUEST_SERIAL_POWEROFF
    assert calls[-1] == ("power_off",)


def test_sigterm_and_sigusr2_request_shutdown() -> None:
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        fake = machine(config=config_bytes())
        init, _ = booted(fake)
        fake.pending_signals.append(sig)
        init.serve()
        assert init.shutdown_requested


def test_busy_data_disk_is_remounted_read_only_then_detached() -> None:
    fake = machine(config=config_bytes())
    fake.files["/proc/self/mountinfo"] = (
        f"30 22 254:16 / {vmcontract.DATA_MOUNT} rw - ext4 /dev/vdb rw\n"
        f"31 30 0:40 / {vmcontract.DATA_MOUNT}/overlay/x/merged rw - overlay o rw\n").encode()
    fake.umount_fails = {vmcontract.DATA_MOUNT}
    shutdown_after_boot(fake)
    calls = fake.calls
    assert calls.index(("umount", vmcontract.DATA_MOUNT + "/overlay/x/merged", 0)) < \
        calls.index(("umount", vmcontract.DATA_MOUNT, 0))
    assert ("mount", "", vmcontract.DATA_MOUNT, "", MS_REMOUNT | MS_RDONLY, "") in calls
    assert ("umount", vmcontract.DATA_MOUNT, MNT_DETACH) in calls
    assert fake.lines[-1] == vmcontract.GUEST_SERIAL_POWEROFF


def test_pydeskd_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    fake = machine(config=config_bytes())
    init, _ = booted(fake)
    original = fake.kill

    def stubborn(pid: int, sig: int) -> None:
        if pid == init.pydeskd and sig == signal.SIGTERM:
            fake.calls.append(("kill", pid, sig))
            return
        original(pid, sig)

    fake.kill = stubborn  # type: ignore[method-assign]
    started = fake.now
    init.shutdown()
    assert ("kill", init.pydeskd, signal.SIGKILL) in fake.calls
    assert fake.now - started >= boot.STOP_GRACE
    assert fake.calls[-1] == ("power_off",)


def test_pydeskd_dying_later_is_restarted_a_few_times() -> None:
    fake = machine(config=config_bytes())
    init, _ = booted(fake)
    original_wait = fake.wait

    def crashing_wait(timeout: float, fds: list[int]) -> tuple[list[int], list[int]]:
        # pydeskd crashes whenever the init waits in serve(); once it has been restarted as
        # often as allowed, the host asks for power-off.
        starts = [argv for argv in fake.spawned() if argv[0] == PYDESKD]
        if len(starts) > boot.RESTART_LIMIT and not init.pydeskd:
            fake.pending_signals.append(signal.SIGTERM)
        elif timeout >= 1.0 and init.pydeskd in fake.running:
            fake.kill(init.pydeskd, signal.SIGKILL)
        return original_wait(timeout, fds)

    fake.wait = crashing_wait  # type: ignore[method-assign]
    init.serve()
    starts = [argv for argv in fake.spawned() if argv[0] == PYDESKD]
    assert len(starts) == 1 + boot.RESTART_LIMIT
    assert init.shutdown_requested
    failures = [line for line in fake.lines if line.startswith(vmcontract.GUEST_SERIAL_FAILED)]
    assert len(failures) == 1 and "not restarted again" in failures[0]


def test_the_preloaded_pydeskd_gets_its_go_after_the_data_disk_is_mounted() -> None:
    fake = machine(config=config_bytes())
    preloaded = fake.preload()
    pid, pipe = preloaded.pid, preloaded.go_fd
    init = Init(cast(System, fake), preloaded)
    assert init.boot([])
    go = next(c for c in fake.calls if c[0] == "write_fd")
    assert go[1] == pipe
    assert go[2] == preload.go_line(plan.pydeskd_argv()[1:])
    assert fake.calls.index(("mount", "/dev/vdb", vmcontract.DATA_MOUNT, "ext4", 0,
                             "discard")) < fake.calls.index(go)
    assert ("close_fd", pipe) in fake.calls
    assert init.pydeskd == pid
    assert PYDESKD not in [argv[0] for argv in fake.spawned()]  # no second pydeskd


def test_a_preload_that_died_is_replaced_by_a_plain_pydeskd() -> None:
    fake = machine(config=config_bytes())
    preloaded = fake.preload()
    pid, pipe = preloaded.pid, preloaded.go_fd
    fake.kill(pid, signal.SIGKILL)
    init = Init(cast(System, fake), preloaded)
    assert init.boot([])
    assert [argv[0] for argv in fake.spawned()].count(PYDESKD) == 1
    assert any("pydeskd-preload exited" in line for line in fake.lines)
    assert ("close_fd", pipe) in fake.calls


def test_a_preload_whose_pipe_broke_is_replaced_too() -> None:
    fake = machine(config=config_bytes())
    preloaded = fake.preload()
    fake.broken_pipes.add(preloaded.go_fd)
    init = Init(cast(System, fake), preloaded)
    assert init.boot([])
    assert [argv[0] for argv in fake.spawned()].count(PYDESKD) == 1


def test_go_line_round_trip() -> None:
    args = ["-H", "unix:///run/pydesk/docker.sock", "--data-root", "/var/lib/pydesk"]
    assert preload.parse_go_line(preload.go_line(args)) == args
    assert preload.parse_go_line(b"go") is None
    assert preload.parse_go_line(b"stop\n") is None
