"""The ``process`` half of the spec: argv, environment, capabilities, rlimits, as Docker does.

Pure functions over the (image-merged) Config and the HostConfig.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydeskd.daemon.config_types import Config, HostConfig, Ulimit, normalize_capabilities
from pydeskd.daemon.ocispec.defaults import DEFAULT_CAPABILITIES, DEFAULT_PATH_ENV
from pydeskd.runtime.capabilities import CAPABILITIES


def container_env(config: Config, hostname: str) -> list[str]:
    """PATH, HOSTNAME, TERM=xterm with a tty, then the Config's Env replacing or appending
    (``NAME`` without ``=`` unsets), as moby's CreateDaemonEnvironment."""
    env = [f"PATH={DEFAULT_PATH_ENV}", f"HOSTNAME={hostname}"]
    if config.tty:
        env.append("TERM=xterm")
    index = {e.partition("=")[0]: i for i, e in enumerate(env)}
    out: list[str | None] = list(env)
    for value in config.env or ():
        key, sep, _ = value.partition("=")
        if not sep:
            if key in index:
                out[index[key]] = None
            continue
        if key in index:
            out[index[key]] = value
        else:
            out.append(value)
    return [e for e in out if e is not None]


def all_capabilities(last: int, bounding: int | None = None) -> list[str]:
    """Every capability the kernel knows and (``bounding``, a mask) the daemon holds, in kernel
    order: what ``--privileged`` and ``--cap-add ALL`` get."""
    return [name for name, number in sorted(CAPABILITIES.items(), key=lambda kv: kv[1])
            if number <= last and (bounding is None or bounding >> number & 1)]


def capabilities(host: HostConfig, last: int, bounding: int | None = None) -> list[str]:
    """moby's TweakCapabilities: privileged = all; ALL in CapAdd = all minus drops; ALL in
    CapDrop = only the adds; else defaults minus drops, plus adds (in that order)."""
    if host.privileged:
        return all_capabilities(last, bounding)
    if not host.cap_add and not host.cap_drop:
        return list(DEFAULT_CAPABILITIES)
    drops = normalize_capabilities(host.cap_drop, last)
    adds = normalize_capabilities(host.cap_add, last)
    if "ALL" in adds:
        return [c for c in all_capabilities(last, bounding) if c not in drops]
    if "ALL" in drops:
        return _unique(adds)
    return _unique([c for c in DEFAULT_CAPABILITIES if c not in drops] + adds)


def _unique(names: Iterable[str]) -> list[str]:
    # Docker can list a capability twice (--cap-add of a default one); the kernel sets are
    # sets, so pydesk lists each once.
    return list(dict.fromkeys(names))


def rlimits(ulimits: Sequence[Ulimit] | None, defaults: Sequence[Ulimit] = ()) -> list[dict[
        str, object]]:
    """The container's Ulimits, then the daemon's default-ulimits it did not name."""
    chosen = list(ulimits or ())
    named = {u.name for u in chosen}
    chosen += [u for u in defaults if u.name not in named]
    return [{"type": "RLIMIT_" + u.name.upper(), "hard": u.hard, "soft": u.soft}
            for u in chosen]
