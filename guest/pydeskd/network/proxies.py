"""The seam to the userland port proxies (:mod:`pydeskd.network.portproxy`), one per binding.

What it is for: the service asks for a proxy per published port (it holds the host port, so a
port that is taken fails before the container starts, and it serves what the kernel path
cannot, e.g. ``::1``), stops it when the container's task goes, and checks at restore whether
it still runs. Each proxy has a pid file ``<exec-root>/network/proxies/<cid>-<proto>-<ip>-<port>
.pid``, named here from parsed values only, so a restarted daemon finds it.

What it must never do: bind the port itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydeskd.network import portproxy
from pydeskd.network.model import PortMapping


class Proxies(Protocol):
    def start(self, mapping: PortMapping, container_ip: str, pid_file: Path) -> int: ...

    def stop(self, pid_file: Path) -> None: ...

    def alive(self, pid_file: Path) -> bool: ...


def pid_file(root: Path, cid: str, mapping: PortMapping) -> Path:
    """The binding's pid file, named from its parsed parts only: an address (as text, ``:``
    as ``_``; "any" for every address), never anything that could leave ``root``."""
    import ipaddress
    import re

    try:
        ip = str(ipaddress.ip_address(mapping.host_ip)) if mapping.host_ip else "any"
    except ValueError:  # a record from before HostIp was parsed at create
        ip = mapping.host_ip
    safe = re.sub(r"[^0-9A-Za-z.]", "_", ip).replace("..", "__")
    proto = re.sub(r"[^a-z]", "_", mapping.proto)
    return root / f"{cid[:12]}-{proto}-{safe}-{int(mapping.host_port)}.pid"


class PortProxies:
    """``Proxies`` over pydesk-proxy processes."""

    def start(self, mapping: PortMapping, container_ip: str, pid_file: Path) -> int:
        """Raises PortInUse (a FailedPrecondition: "Bind for 0.0.0.0:18080 failed: port is
        already allocated") when the host port cannot be bound."""
        pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not mapping.host_ip:
            # Every address: one dual-stack socket on "::" also serves IPv6 (::1 included,
            # which the kernel's IPv4 DNAT cannot), as Docker's second proxy on [::] does. A
            # host without IPv6 gets the IPv4 socket instead. An explicit 0.0.0.0 or :: is
            # that family only (Docker 27+).
            try:
                return portproxy.start_proxy(mapping.proto, "::", mapping.host_port,
                                             container_ip, mapping.container_port, pid_file,
                                             dual_stack=True)
            except portproxy.PortInUse:
                raise portproxy.PortInUse(f"Bind for 0.0.0.0:{mapping.host_port} failed: port "
                                          f"is already allocated") from None
            except portproxy.ProxyStartError:
                pass
        return portproxy.start_proxy(mapping.proto, mapping.host_ip or "0.0.0.0",
                                     mapping.host_port, container_ip, mapping.container_port,
                                     pid_file)

    def stop(self, pid_file: Path) -> None:
        portproxy.stop_proxy(pid_file)

    def alive(self, pid_file: Path) -> bool:
        return portproxy.proxy_alive(pid_file)
