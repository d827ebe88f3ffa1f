"""The guest init's one seam over the system: mounts, files, children, signals, power.

What it is for: ``System`` is every side effect the init has, as small methods, so that the boot
sequence (``boot``) runs against a recording fake in unit tests and against the kernel in the VM.
What it must never do: decide anything (that is ``plan``/``boot``), or wait without a bound.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import signal
import socket
import time

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MNT_DETACH = 2
RB_POWER_OFF = 0x4321FEDC
BLKFLSBUF = 0x1261
"""_IO(0x12, 97): write back and drop a block device's buffer cache."""
RNDRESEEDCRNG = 0x5207
"""_IO('R', 0x07): reseed the kernel's random generator from its input pool now."""
SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class System:
    """The real system (PID 1 in the VM)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._console = -1
        self._wakeup_r = -1

    # --- console --------------------------------------------------------------------------

    def _console_fd(self) -> int:
        if self._console < 0:
            try:
                self._console = os.open("/dev/console", os.O_WRONLY | os.O_NOCTTY)
            except OSError:
                return 2
        return self._console

    def log(self, message: str) -> None:
        self.console_line(f"[{self.uptime():8.3f}] pydesk-guest: {message}")

    def console_line(self, text: str) -> None:
        """One line on the console, as given (the contract's serial markers are exact)."""
        with contextlib.suppress(OSError):
            os.write(self._console_fd(), (text + "\n").encode(errors="replace"))

    def uptime(self) -> float:
        try:
            with open("/proc/uptime", "rb") as f:
                return float(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0

    # --- filesystems ----------------------------------------------------------------------

    def mount(self, source: str, target: str, fstype: str, flags: int = 0,
              data: str = "") -> None:
        """mount(2). Raises OSError."""
        if self._libc.mount(source.encode(), target.encode(), fstype.encode(), flags,
                            data.encode() or None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")

    def umount(self, target: str, flags: int = 0) -> None:
        """umount2(2). Raises OSError."""
        if self._libc.umount2(target.encode(), flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"umount {target}: {os.strerror(err)}")

    def read(self, path: str, limit: int = 1 << 20) -> bytes:
        with open(path, "rb") as f:
            return f.read(limit)

    def write(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data.encode() if isinstance(data, str) else data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        os.makedirs(path, mode, exist_ok=True)

    def symlink(self, target: str, path: str) -> None:
        if not os.path.lexists(path):
            os.symlink(target, path)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except OSError:
            return []

    def sync(self) -> None:
        os.sync()

    def sethostname(self, name: str) -> None:
        socket.sethostname(name)

    def flush_block_device(self, device: str) -> None:
        """Drops ``device``'s cached blocks (BLKFLSBUF). Raises OSError."""
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, BLKFLSBUF)
        finally:
            os.close(fd)

    def set_clock_ns(self, unix_ns: int) -> None:
        """The wall clock (CLOCK_REALTIME). Raises OSError."""
        time.clock_settime_ns(time.CLOCK_REALTIME, unix_ns)

    def add_entropy(self, data: bytes) -> None:
        """Mixes ``data`` into the kernel's pool and reseeds its generator. Raises OSError."""
        fd = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
            fcntl.ioctl(fd, RNDRESEEDCRNG)
        finally:
            os.close(fd)

    def open_port(self, path: str) -> int:
        """A virtio-serial port, non-blocking. Raises OSError."""
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)

    def write_port(self, fd: int, data: bytes) -> bool:
        """One short write to a port; False when it would block (no host connected)."""
        try:
            return os.write(fd, data) == len(data)
        except OSError:
            return False

    def block_device_bytes(self, device: str) -> int:
        name = os.path.basename(device)
        return int(self.read(f"/sys/block/{name}/size").strip()) * 512

    # --- children -------------------------------------------------------------------------

    def spawn(self, argv: list[str], env: dict[str, str], *, output: str | None = None,
              stdin_data: bytes | None = None) -> int:
        """Starts ``argv`` (PATH lookup in ``env``) in a session of its own; stdout and stderr go
        to ``output`` (appended) or the console; stdin is ``stdin_data`` or /dev/null."""
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
        reader = -1
        if stdin_data is not None:
            reader, writer = os.pipe()
            os.write(writer, stdin_data)  # small (ip -batch): fits in the pipe buffer
            os.close(writer)
            actions.append((os.POSIX_SPAWN_DUP2, reader, 0))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
        target = output or "/dev/console"
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOCTTY
        actions.append((os.POSIX_SPAWN_OPEN, 1, target, flags, 0o640))
        actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
        try:
            return os.posix_spawnp(argv[0], argv, env, file_actions=actions, setsid=True,
                                   setsigdef=SIGNALS)
        finally:
            if reader >= 0:
                os.close(reader)

    def write_fd(self, fd: int, data: bytes) -> None:
        """All of ``data`` (a short line) to a pipe. Raises OSError (reader gone: EPIPE)."""
        while data:
            data = data[os.write(fd, data):]

    def close_fd(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            os.close(fd)

    def reap(self) -> list[tuple[int, int]]:
        """Every exited child (orphans included) as (pid, exit code or -signal)."""
        out: list[tuple[int, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return out
            if pid == 0:
                return out
            out.append((pid, os.waitstatus_to_exitcode(status)))

    def has_children(self) -> bool:
        """Whether any child (orphans included) is alive or unreaped."""
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return True

    def kill(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    # --- events ---------------------------------------------------------------------------

    def catch_signals(self) -> None:
        """Signals become bytes on a pipe that ``wait`` watches (nothing runs in handlers)."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup_r = r
        signal.set_wakeup_fd(w)
        for sig in SIGNALS:
            signal.signal(sig, lambda *_: None)

    def wait(self, timeout: float, fds: list[int]) -> tuple[list[int], list[int]]:
        """Up to ``timeout`` s for a signal or input on ``fds``: (signals, readable fds)."""
        watch = [self._wakeup_r, *fds] if self._wakeup_r >= 0 else fds
        try:
            ready, _, _ = select.select(watch, [], [], max(timeout, 0.0))
        except InterruptedError:
            ready = []
        signals: list[int] = []
        if self._wakeup_r in ready:
            with contextlib.suppress(BlockingIOError):
                signals = list(os.read(self._wakeup_r, 256))
        return signals, [fd for fd in ready if fd != self._wakeup_r]

    def open_input(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def read_fd(self, fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except OSError:
            return b""

    def ping(self, socket_path: str, timeout: float) -> bytes:
        """The raw reply to GET /_ping on a unix socket (b"" when it does not answer)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(socket_path)
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: pydesk\r\n\r\n")
                chunks = []
                while chunk := s.recv(4096):
                    chunks.append(chunk)
                return b"".join(chunks)
        except OSError:
            return b""

    def monotonic(self) -> float:
        return time.monotonic()

    def power_off(self) -> None:
        self._libc.reboot(RB_POWER_OFF)
