"""Port forwarder: published container ports appear on the host's localhost.

What it is for: in VM mode, every port a guest container publishes listens on the host, on
127.0.0.1 unless the user asked for another address, TCP and UDP, within a second of the
container starting, and goes away when it stops. QEMU's user-mode network does the forwarding
(``hostfwd`` rules added through QMP), so no byte passes through Python.

- :mod:`.desired`: containers -> the forwards they need (pure; the host-address rules).
- :mod:`.usernet`: the monitor commands and ``info usernet`` parsing (pure).
- :mod:`.backend`: QEMU through QMP, the one side-effect seam.
- :mod:`.reconcile`: the diff and its application, removals first.
- :mod:`.state`: ``forwards.json``, what was made and what failed, for the CLI.
- :mod:`.apiclient`: GETs and the event stream over any socket-like stream.
- :mod:`.follower`: :class:`PortForwarder`, the agent's thread.

What it must never do: touch forwarding rules it did not make (the agent's SSH forward shares the
netdev), listen on every interface unless asked, or run at all in passthrough mode (pydeskd
publishes on the host itself there).
"""

from pydesk.forward.desired import HOST_PORT_BINDINGS_LABEL

__all__ = ["HOST_PORT_BINDINGS_LABEL"]
