"""Where forwards are made: QEMU's user-mode network, through QMP (the one seam of this package).

What it is for: :class:`QemuUserNetBackend` lists, adds and removes ``hostfwd`` rules on the
instance's user-mode netdev with ``human-monitor-command``. QEMU itself then listens on the host:
native speed, TCP and UDP, no Python in the data path. When QEMU refuses a rule it does not say
why, so the backend tries the same bind itself to tell "port in use" from "address not on this
host".
What it must never do: touch a rule it was not asked about (the agent's SSH forward lives on the
same netdev), or listen on the host itself beyond that momentary diagnostic bind.
"""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path
from typing import Protocol

from pydesk.forward import usernet
from pydesk.forward.desired import Forward, Proto
from pydesk.vm.errors import VmError
from pydesk.vm.qemu import USER_NETDEV_ID
from pydesk.vm.qmp import Qmp, QmpError
from pydeskd.vmcontract import GUEST_ADDRESS

GUEST_IP = GUEST_ADDRESS.partition("/")[0]


class ForwardError(VmError):
    """A forward could not be made or removed."""


class BackendUnavailable(ForwardError):
    """QEMU did not answer (stopped, or busy): nothing is known about any forward."""


class RuleRefused(ForwardError):
    """QEMU refused this one rule; the others are unaffected."""


class PortInUse(RuleRefused):
    """Something else on the host already listens on the port."""


class ForwardBackend(Protocol):
    def list(self) -> frozenset[Forward]:
        """Every forward that exists now (the backend's own rules included)."""
        ...

    def add(self, forward: Forward) -> None:
        """Raises RuleRefused (PortInUse...) or BackendUnavailable."""
        ...

    def remove(self, forward: Forward) -> None:
        """Removing one that is already gone is not an error. Raises BackendUnavailable."""
        ...


class QemuUserNetBackend:
    """``hostfwd`` rules on one netdev of one QEMU, to ``guest_ip``."""

    def __init__(self, qmp_socket: Path, *, netdev_id: str = USER_NETDEV_ID,
                 guest_ip: str = GUEST_IP, timeout: float = 5.0, attempts: int = 3) -> None:
        self.qmp = Qmp(qmp_socket, timeout=timeout)
        self.netdev_id = netdev_id
        self.guest_ip = guest_ip
        self.attempts = attempts

    def monitor(self, command_line: str) -> str:
        """One human monitor command; QMP serves one client at a time and the agent and the
        CLI use it too, so a failed connection is tried again a few times."""
        for attempt in range(self.attempts):
            try:
                return str(self.qmp.execute("human-monitor-command",
                                            {"command-line": command_line}))
            except QmpError as e:
                if attempt + 1 == self.attempts:
                    raise BackendUnavailable(f"QEMU did not run {command_line!r}: {e.message}",
                                             hint="is the VM running? pydesk vm status") from e
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def rules(self) -> list[usernet.HostForwardRule]:
        return usernet.parse_usernet(self.monitor("info usernet"), self.netdev_id)

    def list(self) -> frozenset[Forward]:
        return frozenset(r.forward() for r in self.rules() if r.guest_address == self.guest_ip)

    def add(self, forward: Forward) -> None:
        reply = self.monitor(usernet.add_command(self.netdev_id, forward, self.guest_ip))
        if usernet.add_failed(reply):
            raise diagnose(forward, reply.strip())

    def remove(self, forward: Forward) -> None:
        self.monitor(usernet.remove_command(self.netdev_id, forward))


def diagnose(forward: Forward, reply: str) -> RuleRefused:
    """Why QEMU could not listen on the forward's host address: it only says "Could not set
    up host forwarding rule", so bind the same address and port to learn the errno."""
    problem = probe_bind(forward.proto, forward.host_ip, forward.host_port)
    if problem is not None and problem.errno == errno.EADDRINUSE:
        return PortInUse(f"host port {forward.host_port} is already in use",
                         hint="stop what listens there, or publish another port")
    if problem is not None and problem.errno == errno.EADDRNOTAVAIL:
        return RuleRefused(f"{forward.host_ip} is not an address of this host",
                           hint="publish on 127.0.0.1 or 0.0.0.0")
    if problem is not None and problem.errno == errno.EACCES:
        return RuleRefused(f"host port {forward.host_port} needs privileges on this host",
                           hint="publish on a port above 1023")
    detail = problem.strerror if problem is not None else reply
    return RuleRefused(f"QEMU could not listen on {forward.host_ip}:{forward.host_port}/"
                       f"{forward.proto}: {detail}")


def probe_bind(proto: Proto, host_ip: str, port: int) -> OSError | None:
    """Binds (and closes at once) the address QEMU could not; None when the bind works."""
    kind = socket.SOCK_STREAM if proto is Proto.TCP else socket.SOCK_DGRAM
    try:
        with socket.socket(socket.AF_INET, kind) as s:
            if proto is Proto.TCP:
                # As slirp does: a port in TIME_WAIT is not "in use".
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host_ip, port))
    except OSError as e:
        return e
    return None
