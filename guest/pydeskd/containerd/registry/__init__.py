"""The registry client (OCI distribution spec), pull side and push side.

What it is for: everything pydesk says to a registry goes through ``RegistryClient``:

- ``hosts``: mirrors and plain-http (insecure) registries from the daemon config -> endpoints;
- ``credentials``: ``~/.docker/config.json`` and per-request ``X-Registry-Auth`` credentials;
- ``auth``: ``WWW-Authenticate`` challenges, Basic, Bearer tokens and their cache;
- ``transport``: the HTTP seam (urllib3), retries, redirects without cross-host credentials,
  registry error mapping;
- ``client``: resolve, manifests; ``fetch``: blob download into the content store;
  ``push``: blob upload (mount, monolithic, chunked) and manifests.

What it must never do: write into the content store anything unverified, or leak a credential
into a message, a log line, or a request to a host that did not ask for it.
"""

from pydeskd.containerd.registry.client import RegistryClient, as_reference
from pydeskd.containerd.registry.credentials import (
    Anonymous,
    Credentials,
    CredentialSource,
    DockerConfig,
    Explicit,
)
from pydeskd.containerd.registry.hosts import Endpoint, RegistryHosts
from pydeskd.containerd.registry.transport import Transport, Urllib3Backend

__all__ = [
    "Anonymous",
    "CredentialSource",
    "Credentials",
    "DockerConfig",
    "Endpoint",
    "Explicit",
    "RegistryClient",
    "RegistryHosts",
    "Transport",
    "Urllib3Backend",
    "as_reference",
]
