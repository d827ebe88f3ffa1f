"""Host API socket -> guest daemon; rewrites host bind-mount paths to synced guest paths.

What it is for: ``ApiProxy(socket_path, opener, resolver).start()`` serves the Engine API on a
private unix socket of the host (``~/.pydesk/run/docker.sock`` in the agent), relaying every
connection -- keep-alive requests, streamed bodies, hijacked attach/exec streams with their
half-close -- to the guest daemon through one upstream stream per connection (``opener``: in the
VM, ``GuestChannel.open_unix``). Container creates are rewritten (:mod:`pydesk.proxy.rewrite`):
bind sources to their synced guest copies, the Docker socket to the guest's, published ports to
the guest's address with the user's bindings kept in a label (:mod:`pydesk.proxy.labels`).

Never exposes the guest daemon unauthenticated to the host or the network.
"""

from pydesk.proxy.connection import VM_DOWN_MESSAGE
from pydesk.proxy.labels import HOST_PORT_BINDINGS_LABEL
from pydesk.proxy.rewrite import BindResolver, RewriteError, rewrite_create
from pydesk.proxy.server import ApiProxy, ProxySocketError
from pydesk.proxy.streams import Opener, SocketStream, Stream, unix_opener

__all__ = ["HOST_PORT_BINDINGS_LABEL", "VM_DOWN_MESSAGE", "ApiProxy", "BindResolver", "Opener",
           "ProxySocketError", "RewriteError", "SocketStream", "Stream", "rewrite_create",
           "unix_opener"]
