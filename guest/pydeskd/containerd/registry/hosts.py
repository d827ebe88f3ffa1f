"""Which URLs serve a registry: mirrors, the upstream host, and http or https for each.

What it is for: the daemon's ``registry-mirrors`` and ``insecure-registries`` settings (daemon.json)
turn a registry name from a reference (``docker.io``, ``127.0.0.1:5000``) into an ordered list of
``Endpoint``s the client tries in turn. Docker's rules, re-implemented from its documentation:

- mirrors apply to Docker Hub (``docker.io``) only, and are tried before the upstream;
- ``docker.io`` is served by ``registry-1.docker.io``;
- https by default; plain http for a registry listed as insecure (``host[:port]`` or a CIDR that
  holds the host's IP literal) and for localhost and 127.0.0.0/8, which Docker treats as insecure.

What it must never do: resolve names or touch the network (a hostname matches a CIDR only when it
is an IP literal), or downgrade a registry that is not configured as insecure to http.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.reference import DEFAULT_DOMAIN, registry_host

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True)
class Endpoint:
    """One place to send registry API requests: ``{scheme}://{host}/v2/...``."""

    host: str  # host[:port], as in URLs
    scheme: str  # "https" or "http"
    mirror: bool = False
    # A mirror URL may carry a path prefix (``https://mirror.example/prefix``); API paths follow it.
    path_prefix: str = ""

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path_prefix}"

    def url(self, path: str) -> str:
        """``path`` starts with ``/v2/``."""
        return self.base_url + path


def _split_host_port(host: str) -> tuple[str, str]:
    if host.startswith("["):  # [ipv6]:port
        end = host.find("]")
        return host[1:end], host[end + 2 :] if end + 1 < len(host) else ""
    name, _, port = host.partition(":")
    return name, port


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(_split_host_port(host)[0])
    except ValueError:
        return None


class RegistryHosts:
    """Endpoints for each registry name, from the daemon configuration.

    ``mirrors``: URLs such as ``https://mirror.example.com`` or ``http://127.0.0.1:5001``.
    ``insecure``: ``host[:port]`` entries or CIDRs (``10.0.0.0/8``). Raises InvalidArgument for an
    entry it cannot read, so a typo in daemon.json fails at startup, not at the first pull.
    """

    def __init__(self, mirrors: tuple[str, ...] = (), insecure: tuple[str, ...] = ()) -> None:
        self._mirrors = tuple(self._parse_mirror(m) for m in mirrors)
        self._insecure_hosts: set[str] = set()
        self._insecure_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in insecure:
            entry = raw.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
            if not entry:
                raise InvalidArgument("empty insecure registry entry")
            if "/" in entry:
                try:
                    self._insecure_nets.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise InvalidArgument(f"invalid insecure registry CIDR {entry!r}") from None
            else:
                self._insecure_hosts.add(entry.lower())

    @staticmethod
    def _parse_mirror(text: str) -> Endpoint:
        url = urllib.parse.urlsplit(text.strip())
        if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
            raise InvalidArgument(f"invalid registry mirror {text!r}: want http(s)://host[:port]")
        if "@" in url.netloc:
            raise InvalidArgument(f"invalid registry mirror {text!r}: no credentials in URLs")
        return Endpoint(url.netloc.lower(), url.scheme, True, url.path.rstrip("/"))

    def is_insecure(self, host: str) -> bool:
        """Plain http allowed for ``host`` (``host[:port]``)?"""
        host = host.lower()
        name, _ = _split_host_port(host)
        if host in self._insecure_hosts or name in self._insecure_hosts or name == "localhost":
            return True
        ip = _ip(host)
        if ip is None:
            return False
        if (ip.version == 4 and ip in _LOOPBACK) or ip == ipaddress.ip_address("::1"):
            return True
        return any(ip.version == net.version and ip in net for net in self._insecure_nets)

    def endpoints(self, domain: str) -> list[Endpoint]:
        """The endpoints for a reference's domain, in the order to try them."""
        out = list(self._mirrors) if domain == DEFAULT_DOMAIN else []
        host = registry_host(domain)
        out.append(Endpoint(host, "http" if self.is_insecure(host) else "https"))
        return out

    def push_endpoint(self, domain: str) -> Endpoint:
        """Pushes never go to a mirror (mirrors are read-only caches of the Hub)."""
        return self.endpoints(domain)[-1]
