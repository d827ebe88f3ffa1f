"""A container's /etc/hostname, /etc/hosts and /etc/resolv.conf, as Docker writes them.

What it is for: the content of the three files the daemon keeps in the container's directory
and bind-mounts into it. ``resolv_conf`` filters the host's file as Docker does: loopback
nameservers cannot be reached from the container's network namespace, so they are dropped,
and Google's public servers stand in when none is left; ``Dns``/``DnsSearch``/``DnsOptions``
replace the host's values. The functions are pure (text in, text out); :func:`write_files`
is the one that writes.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
# systemd-resolved's stub (127.0.0.53) is useless in a container; its upstream list is not.
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")

_HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hostname_file(hostname: str) -> str:
    return hostname + "\n"


def hosts_file(hostname: str, extra_hosts: Sequence[str] = (), address: str = "",
               names: Sequence[str] = ()) -> str:
    """``extra_hosts`` in Docker's forms ``name:ip`` or ``name=ip`` (IPv6 addresses keep their
    colons: the name ends at the first separator); ``address`` (the container's IP on its
    first network) gets ``hostname`` and ``names`` (its name, as pydesk adds for tools that
    read /etc/hosts)."""
    lines = [_HOSTS_HEADER]
    for entry in extra_hosts:
        sep = "=" if "=" in entry else ":"
        name, _, ip = entry.partition(sep)
        if name and ip:
            lines.append(f"{ip.strip('[]')}\t{name}\n")
    if address:
        listed = " ".join(dict.fromkeys([hostname, *names]))
        lines.append(f"{address}\t{listed}\n")
    return "".join(lines)


def host_hosts_file(extra_hosts: Sequence[str] = (), path: Path = Path("/etc/hosts")) -> str:
    """For ``--network host``: the host's /etc/hosts, then the ``--add-host`` entries."""
    try:
        text = path.read_text()
    except OSError:
        text = _HOSTS_HEADER
    if text and not text.endswith("\n"):
        text += "\n"
    return text + hosts_file("", extra_hosts).removeprefix(_HOSTS_HEADER)


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False


def resolv_conf(host_text: str, dns: Sequence[str] = (), search: Sequence[str] = (),
                options: Sequence[str] = ()) -> str:
    servers: list[str] = []
    host_search: list[str] = []
    host_options: list[str] = []
    others: list[str] = []
    for raw in host_text.splitlines():
        words = raw.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        key, args = words[0], words[1:]
        if key == "nameserver" and args:
            if not _is_loopback(args[0]):
                servers.append(args[0])
        elif key in ("search", "domain"):
            host_search = args
        elif key == "options":
            host_options += args
        else:
            others.append(raw.strip())
    servers = list(dns) or servers or list(DEFAULT_NAMESERVERS)
    chosen_search = list(search) or host_search
    chosen_options = list(options) or host_options
    out = [f"nameserver {s}" for s in servers]
    if chosen_search and chosen_search != ["."]:
        out.append("search " + " ".join(chosen_search))
    if chosen_options:
        out.append("options " + " ".join(chosen_options))
    return "\n".join([*out, *others]) + "\n"


def host_resolv_conf() -> str:
    """The host's resolv.conf, or resolved's upstream list when the host uses its stub."""
    try:
        text = HOST_RESOLV_CONF.read_text()
    except OSError:
        return ""
    if "127.0.0.53" in text:
        try:
            return RESOLVED_UPSTREAM.read_text()
        except OSError:
            return text
    return text


def write_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
