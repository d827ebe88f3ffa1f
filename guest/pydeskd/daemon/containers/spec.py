"""What the service hands the spec builder, and the process of an exec.

The container's config.json comes from :mod:`pydeskd.daemon.ocispec` (Docker's defaults; see
:mod:`.ocibridge`). An exec's process is built as moby builds it: the container's own process
(read back from its config.json) with the exec's args, env, user, cwd and terminal, and every
capability when privileged. Pure, except that resolving a user reads the container's
/etc/passwd and /etc/group (confined to its rootfs, by the builder's resolver).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeskd.daemon.ocispec import RealHost, resolve_user
from pydeskd.daemon.ocispec.process import all_capabilities

from .mounts import Resolved


@dataclass(frozen=True)
class BundleInputs:
    cid: str
    config: Mapping[str, Any]        # merged container Config (Docker JSON)
    host_config: Mapping[str, Any]
    rootfs: Path
    mounts: Sequence[Resolved]
    hostname_path: str
    hosts_path: str
    resolv_conf_path: str
    netns_path: str = ""             # the network namespace to join ("" = a new one)


def replace_or_append_env(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: ``extra`` overrides same-named variables in place."""
    out = list(base)
    index = {e.partition("=")[0]: n for n, e in enumerate(out)}
    for item in extra:
        key = item.partition("=")[0]
        if key in index:
            out[index[key]] = item
        else:
            index[key] = len(out)
            out.append(item)
    return out


def exec_process(template: Mapping[str, Any], rootfs: Path, args: Sequence[str], *,
                 env: Sequence[str] = (), user: str = "", cwd: str = "", tty: bool = False,
                 privileged: bool = False) -> dict[str, Any]:
    """An exec's OCI process from the container's (``template``). Raises InvalidArgument
    (an unknown user or group)."""
    proc = {k: v for k, v in template.items() if k != "consoleSize"}
    proc["args"] = list(args)
    proc["terminal"] = tty
    base_env = [e for e in template.get("env") or [] if not e.startswith("TERM=")]
    if tty:
        base_env.append("TERM=xterm")
    proc["env"] = replace_or_append_env(base_env, env)
    if user:
        resolved = resolve_user(str(rootfs), user)
        proc["user"] = {"uid": resolved.uid, "gid": resolved.gid,
                        "additionalGids": list(resolved.additional_gids)}
    if cwd:
        proc["cwd"] = posixpath.normpath(cwd)
    if privileged:
        host = RealHost()  # the daemon's bounding set: it cannot grant what it lacks
        caps = all_capabilities(host.last_cap(), host.bounding_set())
        proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
    return proc
