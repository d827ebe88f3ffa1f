"""Labels the API proxy writes on containers it creates, for the host agent's other parts.

What it is for: the one place naming them, so the port forwarder (``host/pydesk/forward``) reads
exactly what the proxy wrote. What it must never do: import anything (the forwarder imports it).
"""

from __future__ import annotations

HOST_PORT_BINDINGS_LABEL = "dev.pydesk.host-port-bindings"
"""JSON of the user's original ``HostConfig.PortBindings`` (``{"80/tcp": [{"HostIp": ...,
"HostPort": ...}]}``). The guest publishes every port on its own address (HostIp cleared); the
forwarder listens on the host at the HostIp the user asked for."""
