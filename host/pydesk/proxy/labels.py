"""Labels the API proxy writes on containers it creates, for the host agent's other parts.

What it is for: the one place naming them and saying what the guest sees of a binding, so the
port forwarder (``host/pydesk/forward``) reads exactly what the proxy wrote and can check it
against the container's real port bindings. What it must never do: import anything beyond the
standard library (the forwarder imports it), or perform I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HOST_PORT_BINDINGS_LABEL = "dev.pydesk.host-port-bindings"
"""JSON of the user's original ``HostConfig.PortBindings`` (``{"80/tcp": [{"HostIp": ...,
"HostPort": ...}]}``), ``{}`` when there are none. The proxy writes it on EVERY create: a
container's own label overrides an image's label of the same name (the daemon merges image
labels with setdefault, as Docker), so an image can never supply it. The guest publishes every
port on its own address (HostIp cleared, :func:`guest_port_bindings`); the forwarder listens on
the host at the HostIp the user asked for, once the label agrees with the container's bindings."""


def guest_port_bindings(bindings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``PortBindings`` the proxy sends the guest for the user's ``bindings``: every
    binding's HostIp cleared (the guest publishes on its own address). Bindings that differed
    only by address (``-p 0.0.0.0:80:80 -p [::]:80:80``) become one, or the guest would try to
    publish the same port twice."""
    out: dict[str, Any] = {}
    for port, entries in bindings.items():
        if not isinstance(entries, list):
            out[port] = entries
            continue
        cleared: list[Any] = []
        for entry in entries:
            if not isinstance(entry, Mapping):
                cleared.append(entry)  # the daemon's to refuse
                continue
            guest = {**entry, "HostIp": ""}
            # Ephemeral ports (HostPort "") are distinct bindings even when equal.
            if guest not in cleared or not guest.get("HostPort"):
                cleared.append(guest)
        out[port] = cleared
    return out
