"""pydesk-proxy: the userland port proxy, docker-proxy's equivalent, one process per published port.

A published port is served by the kernel (DNAT) wherever it can, and by this proxy where it
cannot (connections to 127.0.0.1, which never leave the host's loopback). Each proxy is its
own detached process, so published ports keep working while pydeskd restarts: pydeskd finds
them again by their pid files (:func:`proxy_alive`) instead of restarting them.

Two halves, one module:

* the proxy process (:func:`main`), started as ``python -I -S`` for every published port, so it
  imports only C modules (``_socket``, ``_thread``; ``socket``, ``threading`` and ``typing`` cost
  ~15 ms of start-up; ~11 ms from spawn to report here): it binds first, reports on a pipe,
  forks once (its first process exits, the proxy is reparented to init) and relays
  (:mod:`pydeskd.network.portrelay`).
* the daemon's side: :func:`start_proxy` (spawn, wait for the report, check the pid file the
  proxy wrote before it reported; a taken port raises :class:`PortInUse` with nothing
  left), :func:`stop_proxy`,
  :func:`proxy_alive`.

The proxy must never outlive its pid file's stop, never relay before its bind was reported, and
never hold an fd of pydeskd's. The daemon's side must never signal a process that is not the
proxy its pid file names (the command line is checked, and a pidfd holds the process).
"""

from __future__ import annotations

import os

from pydeskd.containerd.errors import FailedPrecondition

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from pathlib import Path

BACKLOG = 1024
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
MARKERS = ("pydesk-proxy", "pydeskd.network.portproxy")
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); del sys.argv[1]; "
         "from pydeskd.network.portproxy import main; sys.exit(main())")


class ProxyStartError(FailedPrecondition):
    """The proxy could not serve the port (e.g. the address does not exist here)."""


class PortInUse(ProxyStartError):
    """The host port is taken by another process; nothing was started."""


# -- the daemon's side ---------------------------------------------------------------------


def _host_port_text(host_ip: str, port: int) -> str:
    return f"[{host_ip}]:{port}" if ":" in host_ip else f"{host_ip}:{port}"


def proxy_command(  # noqa: PLR0917 (docker-proxy's five flags, and the pid file)
        proto: str, host_ip: str, host_port: int, container_ip: str, container_port: int,
        pid_file: Path, *, udp_idle_timeout: float | None = None,
        dual_stack: bool = False) -> list[str]:
    """The proxy's command line: the ``pydesk-proxy`` launcher beside this interpreter when
    there is one (``ps`` then reads like docker-proxy's), else this interpreter with -I -S.
    ``--pid-file``: the proxy writes its pid there before it reports ready, and it ties the
    process to its pid file for :func:`proxy_alive`."""
    import sys

    launcher = os.path.join(os.path.dirname(sys.executable), "pydesk-proxy")
    if os.access(launcher, os.X_OK):
        head = [launcher]
    else:
        guest = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        head = [sys.executable, "-I", "-S", "-c", _BOOT, guest]
    return [*head, "--proto", proto, "--host-ip", host_ip, "--host-port", str(host_port),
            "--container-ip", container_ip, "--container-port", str(container_port),
            "--pid-file", str(pid_file),
            *(["--udp-idle-timeout", f"{udp_idle_timeout:g}"] if udp_idle_timeout else []),
            *(["--dual-stack", "1"] if dual_stack else [])]


def start_proxy(  # noqa: PLR0917 (docker-proxy's five flags, and the pid file)
        proto: str, host_ip: str, host_port: int, container_ip: str, container_port: int,
        pid_file: Path, *, udp_idle_timeout: float | None = None,
        dual_stack: bool = False) -> int:
    """Starts a detached proxy for one published port; returns its pid, written to
    ``pid_file``. Raises PortInUse (the port is taken: nothing started), ProxyStartError.
    ``dual_stack``: ``host_ip`` "::" also takes IPv4 clients (else an IPv6 address is IPv6
    only). ``udp_idle_timeout`` (default 90 s, as docker-proxy) is for tests."""
    import subprocess

    if proto not in ("tcp", "udp"):
        raise ProxyStartError(f"unsupported protocol {proto!r}")
    argv = proxy_command(proto, host_ip, host_port, container_ip, container_port, pid_file,
                         udp_idle_timeout=udp_idle_timeout, dual_stack=dual_stack)
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ProxyStartError(f"cannot create {pid_file.parent}: {e}") from None
    ready_r, ready_w = os.pipe()
    try:
        first = subprocess.Popen(
            [*argv, "--ready-fd", str(ready_w)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(ready_w,),
            close_fds=True, start_new_session=True, cwd="/")
    except OSError as e:
        os.close(ready_r)
        raise ProxyStartError(f"cannot start the port proxy: {e}") from None
    finally:
        os.close(ready_w)
    try:
        report = _read_report(ready_r, START_TIMEOUT).decode(errors="replace")
    finally:
        os.close(ready_r)
        try:
            first.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:  # stuck before its fork: it never served
            first.kill()
            first.wait()
    word, _, rest = report.strip().partition(" ")
    if word == "ok" and rest.isdigit():
        pid = int(rest)
        if _read_pid(pid_file) != pid:  # the proxy wrote it before it reported: a check
            _terminate(pid, None)
            raise ProxyStartError(f"the port proxy did not write {pid_file}")
        return pid
    if word == "inuse":
        raise PortInUse(f"Bind for {_host_port_text(host_ip, host_port)} failed: "
                        "port is already allocated")
    if word == "error":
        raise ProxyStartError(f"Error starting userland proxy: {rest}")
    raise ProxyStartError("the port proxy exited before it was ready")


def _read_report(fd: int, timeout: float) -> bytes:
    """Everything written to the pipe until every write end is closed."""
    import select
    import time

    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    poller = select.poll()  # not select(): a daemon's fds go past FD_SETSIZE
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise ProxyStartError(f"the port proxy did not report within {timeout:g} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_pid_file(pid_file: str, pid: int) -> None:
    """Atomically (a temporary file renamed over it): a reader sees a whole pid or none.
    Only ``os``: the proxy process writes it."""
    head, _, name = pid_file.rpartition("/")
    tmp = f"{head}/.{name}.{pid}.tmp" if head else f".{name}.{pid}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{pid}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, pid_file)


def _read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _is_our_proxy(pid: int, pid_file: Path) -> bool:
    """Whether ``pid`` runs a pydesk-proxy started for ``pid_file`` (and has not exited)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in (b"Z", b"X"):
        return False
    if not any(marker in arg for arg in args[:6] for marker in MARKERS):
        return False
    try:
        return args[args.index("--pid-file") + 1] == str(pid_file)
    except (ValueError, IndexError):
        return False


def proxy_alive(pid_file: Path) -> bool:
    """Whether the proxy ``pid_file`` names is running (checked by its command line)."""
    pid = _read_pid(pid_file)
    return pid is not None and _is_our_proxy(pid, pid_file)


def stop_proxy(pid_file: Path) -> None:
    """Stops the proxy (SIGTERM, then SIGKILL after STOP_TIMEOUT) and removes its pid file.
    Idempotent: a missing pid file, or one naming another process, only removes the file."""
    pid = _read_pid(pid_file)
    if pid is not None and _is_our_proxy(pid, pid_file):
        _terminate(pid, pid_file)
    pid_file.unlink(missing_ok=True)


def _terminate(pid: int, pid_file: Path | None) -> None:
    """SIGTERM, wait, SIGKILL. The process is held by a pidfd, opened before the command line
    is checked again, so a pid reused in between is never signalled."""
    import select
    import signal

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # gone already
    try:
        if pid_file is not None and not _is_our_proxy(pid, pid_file):
            return
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                return
            if poller.poll(wait * 1000):
                return
    finally:
        os.close(pidfd)


# -- the proxy process -----------------------------------------------------------------------


def _parse(argv: list[str]) -> dict[str, str]:
    """``--flag value`` pairs (argparse costs ~10 ms of start-up here)."""
    known = {"--proto", "--host-ip", "--host-port", "--container-ip", "--container-port",
             "--pid-file", "--ready-fd", "--udp-idle-timeout", "--dual-stack"}
    options: dict[str, str] = {}
    pairs = iter(argv)
    for flag in pairs:
        name, eq, value = flag.partition("=")
        if name not in known:
            raise SystemExit(f"pydesk-proxy: unknown flag {flag!r}")
        if not eq:
            value = next(pairs, "")
        options[name[2:]] = value
    for required in ("proto", "host-ip", "host-port", "container-ip", "container-port"):
        if not options.get(required):
            raise SystemExit(f"pydesk-proxy: --{required} is required")
    if options["proto"] not in ("tcp", "udp"):
        raise SystemExit("pydesk-proxy: --proto must be tcp or udp")
    for port in ("host-port", "container-port"):
        if not options[port].isdigit() or not 0 < int(options[port]) < 65536:
            raise SystemExit(f"pydesk-proxy: --{port} must be a port number")
    return options


def _bind(proto: str, host_ip: str, port: int, dual_stack: bool = False) -> _socket.socket:
    """The listening socket. ``::`` with ``dual_stack`` takes v4-mapped clients too; any
    other IPv6 address is IPv6 only (``-p [::]:P`` binds only IPv6, as Docker 27+)."""
    import _socket

    kind = _socket.SOCK_STREAM if proto == "tcp" else _socket.SOCK_DGRAM
    family = _socket.AF_INET6 if ":" in host_ip else _socket.AF_INET
    sock = _socket.socket(family, kind)
    try:
        if family == _socket.AF_INET6:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY,
                            0 if dual_stack and host_ip == "::" else 1)
        if proto == "tcp":
            # A restarted proxy rebinds at once over the old one's TIME_WAIT connections.
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, port))
        if proto == "tcp":
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> int:
    import sys

    options = _parse(sys.argv[1:] if argv is None else argv)
    ready_fd = int(options["ready-fd"]) if options.get("ready-fd") else -1
    proto = options["proto"]
    from pydeskd.network import portrelay

    fd_limit = portrelay.raise_fd_limit()  # as Go does for docker-proxy: busy ports need fds
    try:
        listener = _bind(proto, options["host-ip"], int(options["host-port"]),
                         options.get("dual-stack") == "1")
    except OSError as e:
        import errno

        word = "inuse" if e.errno == errno.EADDRINUSE else "error"
        where = _host_port_text(options["host-ip"], int(options["host-port"]))
        # Worded as docker-proxy's Go errors are: "listen tcp ...: bind: lower case".
        detail = f"listen {proto} {where}: bind: {(e.strerror or str(e)).lower()}"
        _report(ready_fd, f"{word} {detail}")
        return 1
    pid_file = options.get("pid-file") or ""
    if ready_fd >= 0:
        # The caller waits for its child: that child reports and exits, the proxy goes on
        # reparented to init (no zombie for pydeskd to reap, nothing tied to its life). The
        # pid file is written here, before the report: a daemon killed at any point finds
        # every proxy that serves (restore stops those nobody owns).
        pid = os.fork()
        if pid:
            try:
                if pid_file:
                    _write_pid_file(pid_file, pid)
            except OSError as e:
                import signal

                os.kill(pid, signal.SIGKILL)
                _report(ready_fd, f"error cannot write {pid_file}: {e.strerror or e}")
                os._exit(1)
            _report(ready_fd, f"ok {pid}")
            os._exit(0)
        os.close(ready_fd)
    elif pid_file:
        try:
            _write_pid_file(pid_file, os.getpid())
        except OSError as e:
            _report(-1, f"error cannot write {pid_file}: {e.strerror or e}")
            return 1
    target = (options["container-ip"], int(options["container-port"]))
    if proto == "tcp":
        portrelay.serve_tcp(listener, target, portrelay.max_connections(fd_limit))
    else:
        idle = float(options.get("udp-idle-timeout") or portrelay.UDP_IDLE_TIMEOUT)
        portrelay.serve_udp(listener, target, idle)
    return 0


def _report(fd: int, message: str) -> None:
    if fd >= 0:
        os.write(fd, message.encode() + b"\n")
        os.close(fd)
    elif not message.startswith("ok"):
        os.write(2, f"pydesk-proxy: {message}\n".encode())
