"""A recording stand-in for the guest init's ``System`` seam (a VM cannot run in unit tests).

Children "exit" at the next reap with the code ``exit_codes`` gives their program (0 by default);
long-running programs (sshd, pydeskd) run until signalled. Time advances only when the init
waits, so timeouts are exercised without sleeping.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from pydeskd import vmcontract
from pydeskd.guestinit import plan, preload

LONG_RUNNING = frozenset({"/usr/sbin/sshd", plan.PYDESK_BIN + "/pydeskd"})


@dataclass
class FakeSystem:
    files: dict[str, bytes] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    ready_after_pings: int = 2
    umount_fails: set[str] = field(default_factory=set)
    calls: list[tuple[object, ...]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    now: float = 0.0
    pending_signals: list[int] = field(default_factory=list)
    button_presses: list[bytes] = field(default_factory=list)
    running: dict[int, str] = field(default_factory=dict)
    _exited: list[tuple[int, int]] = field(default_factory=list)
    _next_pid: int = 100
    pings: int = 0
    preload_pipes: dict[int, int] = field(default_factory=dict)
    broken_pipes: set[int] = field(default_factory=set)
    imported_after: float | None = 3.0
    """When the preloader reports its import done (fake seconds), None: never."""
    host_go: bytes | None = None
    """What the host answers on the control port after the first announce (None: nothing)."""
    port_written: list[bytes] = field(default_factory=list)
    clock_ns: int = 0
    entropy: list[bytes] = field(default_factory=list)

    # console
    def log(self, message: str) -> None:
        self.lines.append(message)

    def console_line(self, text: str) -> None:
        self.lines.append(text)

    # filesystems
    def mount(self, source: str, target: str, fstype: str, flags: int = 0,
              data: str = "") -> None:
        self.calls.append(("mount", source, target, fstype, flags, data))

    def umount(self, target: str, flags: int = 0) -> None:
        self.calls.append(("umount", target, flags))
        if target in self.umount_fails and not flags:
            raise OSError(16, f"umount {target}: busy")

    def read(self, path: str, limit: int = 1 << 20) -> bytes:
        try:
            return self.files[path][:limit]
        except KeyError:
            raise FileNotFoundError(2, path) from None

    def write(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        self.files[path] = data.encode() if isinstance(data, str) else data
        self.calls.append(("write", path, mode))

    def exists(self, path: str) -> bool:
        return path in self.files

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        self.calls.append(("makedirs", path))

    def symlink(self, target: str, path: str) -> None:
        self.calls.append(("symlink", target, path))

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.files if p.startswith(prefix)})

    def sync(self) -> None:
        self.calls.append(("sync",))

    def sethostname(self, name: str) -> None:
        self.calls.append(("sethostname", name))

    def flush_block_device(self, device: str) -> None:
        self.calls.append(("flush", device))

    def set_clock_ns(self, unix_ns: int) -> None:
        self.calls.append(("set_clock",))
        self.clock_ns = unix_ns

    def add_entropy(self, data: bytes) -> None:
        self.calls.append(("entropy",))
        self.entropy.append(data)

    def with_ctl_port(self, go: bytes | None) -> FakeSystem:
        """A control port whose host answers ``go`` to the first announce."""
        self.files["/sys/class/virtio-ports/vport1p1/name"] = (vmcontract.CTL_PORT_NAME
                                                                + "\n").encode()
        self.files["/sys/class/virtio-ports/vport0p0/name"] = b"other\n"
        self.host_go = go
        return self

    def open_port(self, path: str) -> int:
        self.calls.append(("open_port", path))
        return 30

    def write_port(self, fd: int, data: bytes) -> bool:
        self.calls.append(("write_port", data))
        self.port_written.append(data)
        return True

    def block_device_bytes(self, device: str) -> int:
        return int(self.read(f"/sys/block/{device.rsplit('/', 1)[-1]}/size")) * 512

    # children
    def spawn(self, argv: list[str], env: dict[str, str], *, output: str | None = None,
              stdin_data: bytes | None = None) -> int:
        self.calls.append(("spawn", tuple(argv), stdin_data))
        if argv[0] in self.exit_codes and self.exit_codes[argv[0]] < 0:
            raise FileNotFoundError(2, argv[0])
        self._next_pid += 1
        pid = self._next_pid
        if argv[0] in LONG_RUNNING:
            self.running[pid] = argv[0]
        else:
            self._exited.append((pid, self.exit_codes.get(argv[0], 0)))
        return pid

    def write_fd(self, fd: int, data: bytes) -> None:
        self.calls.append(("write_fd", fd, data))
        if fd in self.broken_pipes:
            raise BrokenPipeError(32, "Broken pipe")
        if fd in self.preload_pipes:
            self.running[self.preload_pipes[fd]] = plan.PYDESK_BIN + "/pydeskd"

    def close_fd(self, fd: int) -> None:
        self.calls.append(("close_fd", fd))

    def preload(self) -> preload.Preloaded:
        """A preloaded pydeskd (what guestinit.main starts)."""
        self._next_pid += 1
        pid, fd = self._next_pid, 50 + len(self.preload_pipes)
        self.running[pid] = "pydeskd-preload"
        self.preload_pipes[fd] = pid
        return preload.Preloaded(pid, fd, 40)

    def reap(self) -> list[tuple[int, int]]:
        out, self._exited = self._exited, []
        return out

    def has_children(self) -> bool:
        return bool(self.running or self._exited)

    def kill(self, pid: int, sig: int) -> None:
        self.calls.append(("kill", pid, sig))
        if pid == -1:
            if sig == signal.SIGKILL:
                for p in list(self.running):
                    self._exited.append((p, -sig))
                self.running.clear()
            return
        if pid in self.running:
            del self.running[pid]
            self._exited.append((pid, -sig))

    # events
    def catch_signals(self) -> None:
        self.calls.append(("catch_signals",))

    def wait(self, timeout: float, fds: list[int]) -> tuple[list[int], list[int]]:
        self.now += max(timeout, 0.001)
        signals, self.pending_signals = self.pending_signals, []
        ready = [fd for fd in fds if fd == 7] if self.button_presses else []
        if 40 in fds and self.imported_after is not None and self.now >= self.imported_after:
            ready.append(40)
        return signals, ready

    def open_input(self, path: str) -> int:
        self.calls.append(("open_input", path))
        return 7

    def read_fd(self, fd: int) -> bytes:
        if fd == 40:
            return preload.IMPORTED
        if fd == 30:
            if self.port_written and self.host_go is not None:
                answer, self.host_go = self.host_go, None
                self.calls.append(("go_read",))
                return answer
            return b""
        return self.button_presses.pop(0) if self.button_presses else b""

    def ping(self, socket_path: str, timeout: float) -> bytes:
        if not any(p == plan.PYDESK_BIN + "/pydeskd" for p in self.running.values()):
            return b""
        self.pings += 1
        return b"HTTP/1.1 200 OK\r\n\r\nOK" if self.pings >= self.ready_after_pings else b""

    def monotonic(self) -> float:
        return self.now

    def power_off(self) -> None:
        self.calls.append(("power_off",))

    # helpers for tests
    def spawned(self) -> list[tuple[str, ...]]:
        return [c[1] for c in self.calls if c[0] == "spawn"]  # type: ignore[misc]
