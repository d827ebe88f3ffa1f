"""The guest init's sequence: boot, serve (reap, watch for power-off), shut down.

What it is for: ``Init`` drives a ``System`` (the seam) through the boot steps in order, keeps
the children it started (sshd, pydeskd, background modprobe) and the exit codes of every child
it reaps, and runs the shutdown sequence once. What it must never do: wait without a deadline,
or let one failed step (no config, no data disk) stop it from reaching a state where the host
can see why (the console says, sshd runs when it can).
"""

from __future__ import annotations

import signal

from pydeskd import vmcontract
from pydeskd.guestinit import plan, preload, snapshot, unmount
from pydeskd.guestinit.system import MS_NODEV, MS_NOEXEC, MS_NOSUID, System

PING_TIMEOUT = 120.0
"""pydeskd's first start under TCG imports FastAPI and pydantic: seconds, not milliseconds."""
DISK_WAIT = 10.0
STEP_TIMEOUT = 120.0
STOP_GRACE = 10.0
KILL_ALL_GRACE = 3.0
RESTART_LIMIT = 3
SHUTDOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGUSR2, signal.SIGINT})


class Init:
    def __init__(self, system: System, preloaded: preload.Preloaded | None = None) -> None:
        self.sys = system
        self.preloaded = preloaded
        """pydeskd-preload, started by main before anything else."""
        self.exited: dict[int, int] = {}
        self.shutdown_requested = False
        self.config: vmcontract.GuestConfig | None = None
        self.pydeskd = 0
        self.sshd = 0
        self.pydeskd_restarts = 0
        self.data_mounted = False
        self.button_fds: list[int] = []

    # --- events ---------------------------------------------------------------------------

    def poll(self, timeout: float, extra_fds: tuple[int, ...] = ()) -> list[int]:
        """Wait up to ``timeout`` for anything; reap children; note shutdown requests. Returns
        which of ``extra_fds`` are readable."""
        signals, ready = self.sys.wait(timeout, [*self.button_fds, *extra_fds])
        if any(s in SHUTDOWN_SIGNALS for s in signals):
            self.request_shutdown("signal")
        for fd in ready:
            if fd in self.button_fds and plan.is_power_key_press(self.sys.read_fd(fd)):
                self.request_shutdown("power button")
        for pid, code in self.sys.reap():
            self.exited[pid] = code
        return [fd for fd in ready if fd in extra_fds]

    def request_shutdown(self, why: str) -> None:
        if not self.shutdown_requested:
            self.sys.log(f"shutdown requested ({why})")
        self.shutdown_requested = True

    def run(self, argv: list[str], timeout: float = STEP_TIMEOUT,
            stdin_data: bytes | None = None) -> int | None:
        """Runs ``argv`` to completion: its exit code, or None (could not start, or killed at
        the timeout)."""
        try:
            pid = self.sys.spawn(argv, plan.child_env(), stdin_data=stdin_data)
        except OSError as e:
            self.sys.log(f"cannot run {argv[0]}: {e}")
            return None
        deadline = self.sys.monotonic() + timeout
        while pid not in self.exited:
            if self.sys.monotonic() >= deadline:
                self.sys.log(f"{argv[0]} still running after {timeout:.0f}s: killed")
                self.sys.kill(pid, signal.SIGKILL)
                self.wait_exit(pid, 5.0)
                return None
            self.poll(0.05)
        return self.exited.pop(pid)

    def wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = self.sys.monotonic() + timeout
        while pid not in self.exited and self.sys.monotonic() < deadline:
            self.poll(0.05)
        return pid in self.exited

    # --- boot -----------------------------------------------------------------------------

    def mount_api_filesystems(self) -> None:
        s = self.sys
        nosuid_nodev_noexec = MS_NOSUID | MS_NODEV | MS_NOEXEC
        for source, target, fstype, flags, data in (
                ("proc", "/proc", "proc", nosuid_nodev_noexec, ""),
                ("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, ""),
                ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
                ("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                 "gid=5,mode=620,ptmxmode=0666"),
                ("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
                ("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid_nodev_noexec, "nsdelegate")):
            try:
                s.makedirs(target)
                s.mount(source, target, fstype, flags, data)
            except OSError as e:
                # /dev arrives already mounted from the initramfs (EBUSY): not an error.
                if target != "/dev":
                    s.log(f"{e}")
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            try:
                s.symlink(target, "/dev/" + name)
            except OSError as e:
                s.log(f"/dev/{name}: {e}")
        try:
            wanted = " ".join("+" + c for c in plan.CGROUP_CONTROLLERS if c in
                              s.read("/sys/fs/cgroup/cgroup.controllers").decode().split())
            s.write("/sys/fs/cgroup/cgroup.subtree_control", wanted)
        except OSError as e:
            s.log(f"cgroup controllers: {e}")

    def read_config(self) -> vmcontract.GuestConfig | None:
        try:
            return plan.parse_config(self.sys.read(plan.CONFIG_PATH))
        except OSError as e:
            self.sys.log(f"no configuration from the host ({plan.CONFIG_PATH}): {e}")
        except plan.ConfigError as e:
            self.sys.log(f"bad configuration from the host: {e}")
        return None

    def configure(self, config: vmcontract.GuestConfig | None) -> None:
        s = self.sys
        name = plan.hostname(config) if config else "pydesk"
        try:
            s.sethostname(name)
            s.write("/etc/hostname", name + "\n")
            s.write("/etc/hosts", plan.hosts_file(name))
            s.write("/etc/resolv.conf", plan.resolv_conf())
            s.write(plan.DAEMON_CONFIG_PATH, config.daemon_json if config else "{}")
        except OSError as e:
            s.log(f"system files: {e}")
        code = self.run(["ip", "-batch", "-"], stdin_data=plan.network_batch().encode())
        if code != 0:
            s.log(f"network setup failed (ip exit {code})")

    def start_sshd(self, config: vmcontract.GuestConfig | None) -> None:
        if config is None:
            self.sys.log("sshd not started: no configuration")
            return
        try:
            self.sys.write(plan.SSH_HOST_KEY_PATH, plan.host_key(config), 0o600)
            self.sys.write(plan.AUTHORIZED_KEYS_PATH, plan.authorized_keys(config), 0o600)
            self.sys.makedirs("/run/sshd")
            self.sshd = self.sys.spawn(plan.sshd_argv(), plan.child_env(), output=plan.SSHD_LOG)
        except (OSError, plan.ConfigError) as e:
            self.sys.log(f"sshd not started: {e}")

    def load_modules(self, names: list[str]) -> None:
        """modprobe in the background: nothing at boot waits for these."""
        try:
            self.sys.spawn(["modprobe", "-a", "-q", *names], plan.child_env())
        except OSError as e:
            self.sys.log(f"modprobe: {e}")

    def find_disk(self, serial: str) -> str | None:
        deadline = self.sys.monotonic() + DISK_WAIT
        while True:
            serials = {}
            for name in self.sys.listdir("/sys/block"):
                if name.startswith("vd"):
                    try:
                        serials[name] = self.sys.read(f"/sys/block/{name}/serial").decode()
                    except OSError:
                        continue
            found = plan.find_disk(serials, serial)
            if found or self.sys.monotonic() >= deadline:
                return found
            self.poll(0.05)

    def prepare_data_disk(self) -> None:
        s = self.sys
        device = self.find_disk(vmcontract.DATA_DISK_SERIAL)
        if device is None:
            s.log(f"no data disk (serial {vmcontract.DATA_DISK_SERIAL}): state will not persist")
            return
        try:
            # A resumed snapshot may hold blocks the kernel read at boot (partition scan) from
            # the disk as it was then: drop them before anything reads the disk.
            s.flush_block_device(device)
        except OSError as e:
            s.log(f"cannot flush the cache of {device}: {e}: not mounted")
            return
        try:
            sb = plan.read_ext4_superblock(s.read(device, 4096))
        except OSError as e:
            s.log(f"cannot read {device}: {e}")
            return
        if sb is None:
            s.log(f"{device}: no filesystem, making ext4")
            if self.run(plan.mkfs_argv(device)) != 0:
                s.log(f"mkfs.ext4 {device} failed")
                return
        else:
            code = self.run(plan.fsck_argv(device))
            if code not in plan.E2FSCK_OK:
                s.log(f"e2fsck -p {device}: exit {code}; running e2fsck -fy")
                code = self.run(["e2fsck", "-f", "-y", device])
                if code not in plan.E2FSCK_OK:
                    s.log(f"{device} is damaged (e2fsck exit {code}): not mounted")
                    return
        try:
            s.makedirs(vmcontract.DATA_MOUNT)
            s.mount(device, vmcontract.DATA_MOUNT, "ext4", 0, "discard")
        except OSError as e:
            s.log(f"{e}")
            return
        self.data_mounted = True
        s.log(f"{device} mounted on {vmcontract.DATA_MOUNT}")
        try:
            if sb is not None and plan.needs_grow(sb, s.block_device_bytes(device)):
                s.log(f"growing the filesystem on {device}")
                if self.run(["resize2fs", device]) != 0:
                    s.log(f"resize2fs {device} failed (the filesystem keeps its size)")
        except (OSError, ValueError) as e:
            s.log(f"size of {device}: {e}")

    def start_pydeskd(self) -> None:
        """The preloaded pydeskd gets its go (once); otherwise a new pydeskd is started."""
        argv = plan.pydeskd_argv()
        try:
            self.sys.makedirs("/run/pydesk")
        except OSError as e:
            self.sys.log(f"/run/pydesk: {e}")
        preloaded, self.preloaded = self.preloaded, None
        if preloaded is not None:
            pid, pipe = preloaded.pid, preloaded.go_fd
            self.sys.close_fd(preloaded.imported_fd)
            try:
                if pid not in self.exited:
                    self.sys.write_fd(pipe, preload.go_line(argv[1:]))
                    self.pydeskd = pid
                    return
                self.sys.log(f"pydeskd-preload exited ({self.exited[pid]})")
                self.log_tail(plan.PYDESKD_LOG)
            except OSError as e:
                self.sys.log(f"pydeskd-preload: {e}")
            finally:
                self.sys.close_fd(pipe)
        try:
            self.pydeskd = self.sys.spawn(argv, plan.child_env(), output=plan.PYDESKD_LOG)
        except OSError as e:
            self.sys.log(f"pydeskd not started: {e}")
            self.pydeskd = 0

    def wait_ready(self) -> bool:
        deadline = self.sys.monotonic() + PING_TIMEOUT
        while self.sys.monotonic() < deadline and not self.shutdown_requested:
            if self.pydeskd == 0 or self.pydeskd in self.exited:
                self.sys.log(f"pydeskd exited ({self.exited.get(self.pydeskd)}) before "
                             "answering; see " + plan.PYDESKD_LOG)
                self.log_tail(plan.PYDESKD_LOG)
                return False
            if plan.ping_ok(self.sys.ping(vmcontract.GUEST_API_SOCKET, 2.0)):
                return True
            self.poll(0.05)
        return False

    def log_tail(self, path: str, lines: int = 15) -> None:
        try:
            for line in self.sys.read(path).decode(errors="replace").splitlines()[-lines:]:
                self.sys.log("  | " + line)
        except OSError:
            pass

    def open_power_button(self) -> None:
        for name in sorted(self.sys.listdir("/sys/class/input")):
            if not name.startswith("event"):
                continue
            try:
                device = self.sys.read(f"/sys/class/input/{name}/device/name").decode().strip()
                if device == "Power Button":
                    self.button_fds.append(self.sys.open_input("/dev/input/" + name))
            except OSError:
                continue
        if not self.button_fds:
            self.sys.log("no ACPI power button: power off with SIGTERM/SIGUSR2 to PID 1")

    def boot(self, guest_modules: list[str]) -> bool:
        """Everything up to "ready"; False when pydeskd never answered."""
        s = self.sys
        s.catch_signals()
        self.mount_api_filesystems()
        s.log("starting")
        self.open_power_button()
        self.config = self.read_config()
        self.configure(self.config)
        self.load_modules(guest_modules)
        # The host may save the VM here and resume later starts from it: nothing after this
        # line may be in a snapshot (sshd's keys, the data disk, randomness).
        snapshot.pass_point(self)
        if self.shutdown_requested:  # powered off while at the snapshot point
            return False
        self.start_sshd(self.config)
        self.prepare_data_disk()
        self.start_pydeskd()
        if self.wait_ready():
            s.log("pydeskd answers /_ping")  # with the guest's uptime, for boot-time records
            s.console_line(vmcontract.GUEST_SERIAL_READY)
            return True
        if not self.shutdown_requested:
            self.failed(f"pydeskd did not come up (see {plan.PYDESKD_LOG})")
        return False

    def failed(self, reason: str) -> None:
        """Tells the host on the console that the guest gave up on pydeskd (vmcontract)."""
        self.sys.console_line(vmcontract.GUEST_SERIAL_FAILED + reason)

    # --- running --------------------------------------------------------------------------

    def serve(self) -> None:
        """Until a shutdown request: reap, and restart pydeskd if it dies (a few times)."""
        while not self.shutdown_requested:
            self.poll(5.0)
            if self.pydeskd and self.pydeskd in self.exited and not self.shutdown_requested:
                code = self.exited.pop(self.pydeskd)
                self.sys.log(f"pydeskd exited ({code})")
                self.log_tail(plan.PYDESKD_LOG)
                if self.pydeskd_restarts >= RESTART_LIMIT or not self.data_mounted:
                    self.pydeskd = 0
                    self.failed(f"pydeskd exited ({code}) and is not restarted again (see "
                                f"{plan.PYDESKD_LOG})")
                    continue
                self.pydeskd_restarts += 1
                self.start_pydeskd()
                if self.wait_ready():
                    self.sys.log("pydeskd restarted")

    # --- shutdown -------------------------------------------------------------------------

    def stop(self, pid: int, name: str, grace: float) -> None:
        if not pid or pid in self.exited:
            return
        self.sys.kill(pid, signal.SIGTERM)
        if not self.wait_exit(pid, grace):
            self.sys.log(f"{name} did not stop in {grace:.0f}s: killed")
            self.sys.kill(pid, signal.SIGKILL)
            self.wait_exit(pid, 5.0)

    def shutdown(self) -> None:
        s = self.sys
        s.log("stopping")
        self.stop(self.pydeskd, "pydeskd", STOP_GRACE)
        self.stop(self.sshd, "sshd", 2.0)
        # Containers (their shims) and any other process: TERM, a short grace, then KILL, so that
        # nothing holds a file open on the data disk.
        s.kill(-1, signal.SIGTERM)
        self.poll(0.0)
        deadline = s.monotonic() + KILL_ALL_GRACE
        while s.monotonic() < deadline and s.has_children():
            self.poll(0.1)
        s.kill(-1, signal.SIGKILL)
        self.poll(0.2)
        s.sync()
        clean = unmount.unmount_data(s) if self.data_mounted else True
        s.sync()
        if clean:
            s.console_line(vmcontract.GUEST_SERIAL_POWEROFF)
        else:
            s.log("the data disk could not be unmounted cleanly")
        s.power_off()
