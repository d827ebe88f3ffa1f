"""The one seam for netlink: links, addresses and routes, through pyroute2.

What it is for: the handful of operations the bridge driver needs -- read the host's routes,
make a bridge with its gateway address, make a veth pair whose container side is born inside a
network namespace (named eth0.., with its address, MAC and default route), delete links -- as
the ``Links`` protocol, so the driver is unit-tested with a recording fake and this module is
tested for real as root. Every call opens its own netlink socket (pyroute2's IPRoute is not
shared between threads). Inside a container's namespace the socket is opened by a short-lived
thread that setns()es into it first: pyroute2's NetNS forks a helper process instead, and a
forked child shares the asyncio signal wakeup fd of pydeskd's loop, so its death reads as a
SIGTERM to the daemon.

What it must never do: decide names, addresses or policy; it performs what it is told; fork.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Any, Protocol

from pyroute2 import IPRoute, NetlinkError  # type: ignore[import-untyped]

from pydeskd.runtime.syscalls import CLONE_NEWNET, LinuxSyscalls

MAIN_TABLE = 254


class Links(Protocol):
    def host_routes(self) -> list[IPv4Network]: ...

    def link_exists(self, name: str) -> bool: ...

    def ensure_bridge(self, name: str, address: str, prefixlen: int) -> None: ...

    def delete_link(self, name: str) -> None: ...

    def add_veth(self, host_name: str, bridge: str, *, netns: str, ifname: str, address: str,
                 prefixlen: int, mac: str, gateway: str, default_route: bool) -> None: ...

    def loopback_up(self, netns: str) -> None: ...

    def set_default_route(self, netns: str, gateway: str) -> None: ...

    def bridge_ports(self, bridge: str) -> list[str]: ...

    def links(self, prefix: str) -> list[str]: ...


def in_netns(netns: str, fn: Callable[[Any], None]) -> None:
    """Runs ``fn(ip)`` with an IPRoute opened inside ``netns``, on a thread of its own that
    ends right after (setns changes only the calling thread)."""
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                LinuxSyscalls().setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            with IPRoute() as ip:
                fn(ip)
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name="in-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _name(msg: Any) -> str:
    return str(msg.get("ifname") or msg.get_attr("IFLA_IFNAME") or "")


class PyrouteLinks:
    """``Links`` over the kernel (needs CAP_NET_ADMIN)."""

    def host_routes(self) -> list[IPv4Network]:
        out: list[IPv4Network] = []
        with IPRoute() as ip:
            for route in ip.route("dump", family=2):
                if route.get("table") not in (None, MAIN_TABLE):
                    continue
                dst = route.get("dst")
                if not dst:
                    continue
                with contextlib.suppress(ValueError):
                    out.append(IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
        return out

    def link_exists(self, name: str) -> bool:
        with IPRoute() as ip:
            return bool(ip.link_lookup(ifname=name))

    def ensure_bridge(self, name: str, address: str, prefixlen: int) -> None:
        with IPRoute() as ip:
            found = ip.link_lookup(ifname=name)
            if not found:
                with contextlib.suppress(NetlinkError):  # a racing creator made it: fine
                    ip.link("add", ifname=name, kind="bridge")
                found = ip.link_lookup(ifname=name)
            index = found[0]
            have = {(a.get("address"), a["prefixlen"])
                    for a in ip.addr("dump", index=index, family=2)}
            if (address, prefixlen) not in have:
                net = ipaddress.ip_network(f"{address}/{prefixlen}", strict=False)
                ip.addr("add", index=index, address=address, prefixlen=prefixlen,
                        broadcast=str(net.broadcast_address))
            ip.link("set", index=index, state="up")

    def delete_link(self, name: str) -> None:
        with IPRoute() as ip:
            found = ip.link_lookup(ifname=name)
            if found:
                with contextlib.suppress(NetlinkError):
                    ip.link("del", index=found[0])

    def add_veth(self, host_name: str, bridge: str, *, netns: str, ifname: str, address: str,
                 prefixlen: int, mac: str, gateway: str, default_route: bool) -> None:
        """The container side is created directly in ``netns`` under its final name (no
        moment where an eth0 sits in the host's namespace)."""
        with IPRoute() as ip:
            ns_fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ip.link("add", ifname=host_name, kind="veth",
                        peer={"ifname": ifname, "net_ns_fd": ns_fd})
            finally:
                os.close(ns_fd)
            try:
                index = ip.link_lookup(ifname=host_name)[0]
                master = ip.link_lookup(ifname=bridge)[0]
                ip.link("set", index=index, master=master)
                with contextlib.suppress(NetlinkError):
                    # Hairpin: a container reaching its own published port through the host
                    # gets the reply back through the port it came in by.
                    ip.brport("set", index=index, hairpin=1)
                ip.link("set", index=index, state="up")

                def inside(ns: Any) -> None:
                    peer = ns.link_lookup(ifname=ifname)[0]
                    ns.link("set", index=peer, address=mac)
                    ns.addr("add", index=peer, address=address, prefixlen=prefixlen)
                    ns.link("set", index=peer, state="up")
                    if default_route:
                        ns.route("add", dst="default", gateway=gateway)
                in_netns(netns, inside)
            except BaseException:
                with contextlib.suppress(NetlinkError, IndexError):
                    ip.link("del", index=ip.link_lookup(ifname=host_name)[0])
                raise

    def loopback_up(self, netns: str) -> None:
        def up(ns: Any) -> None:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        in_netns(netns, up)

    def set_default_route(self, netns: str, gateway: str) -> None:
        def route(ns: Any) -> None:
            ns.route("replace", dst="default", gateway=gateway)
        in_netns(netns, route)

    def bridge_ports(self, bridge: str) -> list[str]:
        with IPRoute() as ip:
            found = ip.link_lookup(ifname=bridge)
            if not found:
                return []
            return [_name(link) for link in ip.link("dump", master=found[0])]

    def links(self, prefix: str) -> list[str]:
        with IPRoute() as ip:
            return [name for name in (_name(link) for link in ip.link("dump"))
                    if name.startswith(prefix)]
