"""pydeskd's configuration: dockerd's command-line flags merged with daemon.json, as dockerd does.

What it is for: ``DaemonConfig.load(argv)`` gives the one frozen configuration the daemon is
built from. The rules are dockerd's: a missing config file means defaults; a file that is not
JSON, has an unknown key, or sets a key that a flag also sets is an error naming the file and
the directives (the daemon then exits 1 without starting).

What it must never do: touch the system (no directories made, no sockets opened); reading the
config file is its only I/O.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydeskd.containerd.errors import InvalidArgument

PYDESK_VERSION = "0.1.0"
DEFAULT_HOST = "unix:///run/pydesk/docker.sock"
DEFAULT_CGROUP_PARENT = "/pydesk"
INIT_CANDIDATES = (Path("/usr/bin/tini-static"), Path("/usr/bin/docker-init"))
DEFAULT_DATA_ROOT = Path("/var/lib/pydesk")
DEFAULT_EXEC_ROOT = Path("/run/pydesk")
DEFAULT_CONFIG_FILE = Path("/etc/pydesk/daemon.json")
DEFAULT_RUNTIME = "runc"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
LOG_DRIVERS = ("json-file", "local", "none")
JSON_FILE_OPTS = frozenset({"max-size", "max-file", "compress", "labels", "env", "tag"})


class ConfigError(Exception):
    """The configuration cannot be used; the message is what dockerd would print."""


@dataclass(frozen=True)
class RuntimeConfig:
    """One OCI runtime the daemon may run containers with (runc's command line)."""

    path: str
    runtime_args: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.runtime_args:
            out["runtimeArgs"] = list(self.runtime_args)
        return out


# "runc" is pydesk's own runc-compatible runtime; runc or crun are added under their own names
# (or replace this one) in daemon.json's "runtimes".
BUILTIN_RUNTIMES: Mapping[str, RuntimeConfig] = {"runc": RuntimeConfig("pydesk-runc")}


@dataclass(frozen=True)
class LogConfig:
    driver: str = "json-file"
    opts: Mapping[str, str] = field(default_factory=dict)

    @property
    def max_size(self) -> int | None:
        """``max-size`` in bytes (``10m`` -> 10 MiB); None: unbounded."""
        raw = self.opts.get("max-size")
        return None if raw is None else parse_size(raw)

    @property
    def max_file(self) -> int:
        return int(self.opts.get("max-file", "1"))


@dataclass(frozen=True)
class DaemonConfig:
    hosts: tuple[str, ...] = (DEFAULT_HOST,)
    data_root: Path = DEFAULT_DATA_ROOT
    exec_root: Path = DEFAULT_EXEC_ROOT
    config_file: Path = DEFAULT_CONFIG_FILE
    pidfile: Path | None = None
    debug: bool = False
    log_level: str = "info"
    registry_mirrors: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    default_runtime: str = DEFAULT_RUNTIME
    runtimes: Mapping[str, RuntimeConfig] = field(default_factory=lambda: dict(BUILTIN_RUNTIMES))
    log: LogConfig = field(default_factory=LogConfig)
    # Where container cgroups go (dockerd's --cgroup-parent; cgroupfs style, absolute).
    cgroup_parent: str = DEFAULT_CGROUP_PARENT
    # The init `docker run --init` runs as PID 1 (dockerd's init-path; tini, as Docker ships).
    init_path: Path | None = None

    @property
    def images_root(self) -> Path:
        return self.data_root / "images"

    @property
    def unix_sockets(self) -> list[Path]:
        return [Path(h.removeprefix("unix://")) for h in self.hosts if h.startswith("unix://")]

    @property
    def tcp_hosts(self) -> list[tuple[str, int]]:
        out = []
        for host in self.hosts:
            if host.startswith("tcp://"):
                name, _, port = host.removeprefix("tcp://").rpartition(":")
                out.append((name.strip("[]"), int(port)))
        return out

    def runtime(self, name: str | None = None) -> RuntimeConfig:
        """The runtime named in HostConfig.Runtime (None or "": the default one);
        InvalidArgument, as Docker says it, for a name not configured."""
        name = name or self.default_runtime
        try:
            return self.runtimes[name]
        except KeyError:
            raise InvalidArgument(f"unknown or invalid runtime name: {name}") from None

    @staticmethod
    def load(argv: Sequence[str]) -> DaemonConfig:
        """Flags, then the config file they name; ConfigError for anything dockerd refuses."""
        flags = vars(parser().parse_args(list(argv)))
        config_file = Path(flags.pop("config_file", None) or DEFAULT_CONFIG_FILE)
        return from_sources(flags, read_config_file(config_file), config_file)


def parser() -> argparse.ArgumentParser:
    # Every default is SUPPRESS: a flag present in the namespace was given, which is what the
    # conflict check with daemon.json needs.
    p = argparse.ArgumentParser(prog="pydeskd", argument_default=argparse.SUPPRESS,
                                description="The pydesk daemon: the Docker Engine API.")
    p.add_argument("-H", "--host", dest="hosts", action="append",
                   help="daemon socket to listen on: unix:///path or tcp://127.0.0.1:PORT")
    p.add_argument("--data-root", dest="data_root", help=f"default {DEFAULT_DATA_ROOT}")
    p.add_argument("--exec-root", dest="exec_root", help=f"default {DEFAULT_EXEC_ROOT}")
    p.add_argument("--config-file", dest="config_file", help=f"default {DEFAULT_CONFIG_FILE}")
    p.add_argument("-p", "--pidfile", dest="pidfile")
    p.add_argument("-l", "--log-level", dest="log_level", choices=LOG_LEVELS)
    p.add_argument("-D", "--debug", dest="debug", action="store_true")
    p.add_argument("--registry-mirror", dest="registry_mirrors", action="append")
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append")
    p.add_argument("--default-runtime", dest="default_runtime")
    p.add_argument("--log-driver", dest="log_driver", choices=LOG_DRIVERS)
    p.add_argument("--init-path", dest="init_path",
                   help="the init --init runs (default: tini-static or docker-init if installed)")
    p.add_argument("--cgroup-parent", dest="cgroup_parent",
                   help=f"parent cgroup of every container (default {DEFAULT_CGROUP_PARENT})")
    p.add_argument("-v", "--version", action="version",
                   version=f"pydeskd version {PYDESK_VERSION}")
    return p


# daemon.json key -> flag destination (the conflict check's names).
FILE_KEYS: Mapping[str, str] = {
    "hosts": "hosts",
    "data-root": "data_root",
    "exec-root": "exec_root",
    "pidfile": "pidfile",
    "debug": "debug",
    "log-level": "log_level",
    "registry-mirrors": "registry_mirrors",
    "insecure-registries": "insecure_registries",
    "default-runtime": "default_runtime",
    "runtimes": "runtimes",
    "log-driver": "log_driver",
    "log-opts": "log_opts",
    "cgroup-parent": "cgroup_parent",
    "init-path": "init_path",
}


def read_config_file(path: Path) -> dict[str, Any]:
    """daemon.json as a dict; {} when missing; ConfigError when unreadable or not an object."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"unable to configure the daemon with file {path}: {exc}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"unable to configure the daemon with file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"unable to configure the daemon with file {path}: "
                          f"the top level must be a JSON object")
    return data


def _want(kind: type | tuple[type, ...], key: str, value: Any, path: Path) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"unable to configure the daemon with file {path}: "
                          f"{key} must be a {names}, not {json.dumps(value)}")
    return value


def _strings(key: str, value: Any, path: Path) -> tuple[str, ...]:
    items = _want(list, key, value, path)
    return tuple(_want(str, key, item, path) for item in items)


def _file_values(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """daemon.json keys checked and turned into flag destinations."""
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"unable to configure the daemon with file {path}: the following "
                          f"directives don't match any configuration option: "
                          f"{', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        dest = FILE_KEYS[key]
        if dest in ("hosts", "registry_mirrors", "insecure_registries"):
            out[dest] = list(_strings(key, value, path))
        elif dest == "debug":
            out[dest] = _want(bool, key, value, path)
        elif dest == "runtimes":
            out[dest] = _runtimes(_want(dict, key, value, path), path)
        elif dest == "log_opts":
            opts = _want(dict, key, value, path)
            out[dest] = {k: _want(str, f"log-opts.{k}", v, path) for k, v in opts.items()}
        else:
            out[dest] = _want(str, key, value, path)
    return out


def _runtimes(data: Mapping[str, Any], path: Path) -> dict[str, RuntimeConfig]:
    out = {}
    for name, raw in data.items():
        spec = _want(dict, f"runtimes.{name}", raw, path)
        extra = set(spec) - {"path", "runtimeArgs"}
        if extra or "path" not in spec:
            raise ConfigError(f"unable to configure the daemon with file {path}: runtime "
                              f"{name!r} wants {{\"path\": ..., \"runtimeArgs\": [...]}}")
        out[name] = RuntimeConfig(_want(str, f"runtimes.{name}.path", spec["path"], path),
                                  _strings(f"runtimes.{name}.runtimeArgs",
                                           spec.get("runtimeArgs", []), path))
    return out


def from_sources(flags: Mapping[str, Any], file_data: Mapping[str, Any],
                 config_file: Path = DEFAULT_CONFIG_FILE) -> DaemonConfig:
    """Merge given flags (only those present) with daemon.json's content."""
    from_file = _file_values(file_data, config_file)
    both = sorted(set(flags) & set(from_file))
    if both:
        names = {v: k for k, v in FILE_KEYS.items()}
        listed = ", ".join(f"{names[d]}: (from flag: {_show(flags[d])}, from file: "
                           f"{_show(from_file[d])})" for d in both)
        raise ConfigError(f"unable to configure the daemon with file {config_file}: the "
                          f"following directives are specified both as a flag and in the "
                          f"configuration file: {listed}")
    merged = {**from_file, **flags}
    runtimes = dict(BUILTIN_RUNTIMES)
    runtimes.update(merged.get("runtimes", {}))
    default_runtime = merged.get("default_runtime", DEFAULT_RUNTIME)
    if default_runtime not in runtimes:
        raise ConfigError(f"default runtime {default_runtime!r} is not among the configured "
                          f"runtimes ({', '.join(sorted(runtimes))})")
    log = LogConfig(merged.get("log_driver", "json-file"), dict(merged.get("log_opts", {})))
    _check_log(log, config_file)
    hosts = tuple(merged.get("hosts") or (DEFAULT_HOST,))
    for host in hosts:
        _check_host(host)
    pidfile = merged.get("pidfile")
    log_level = merged.get("log_level", "info")
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"invalid log level {log_level!r}: want one of {', '.join(LOG_LEVELS)}")
    return DaemonConfig(
        hosts=hosts,
        data_root=Path(merged.get("data_root", DEFAULT_DATA_ROOT)),
        exec_root=Path(merged.get("exec_root", DEFAULT_EXEC_ROOT)),
        config_file=config_file,
        pidfile=Path(pidfile) if pidfile else None,
        debug=bool(merged.get("debug", False)),
        log_level=log_level,
        registry_mirrors=tuple(merged.get("registry_mirrors", ())),
        insecure_registries=tuple(merged.get("insecure_registries", ())),
        default_runtime=default_runtime,
        runtimes=runtimes,
        log=log,
        cgroup_parent=_cgroup_parent(merged.get("cgroup_parent", DEFAULT_CGROUP_PARENT)),
        init_path=_init_path(merged.get("init_path")),
    )


def _init_path(value: str | None) -> Path | None:
    """The configured init, or the first of Debian's static tini and docker-init present."""
    if value:
        return Path(value)
    for candidate in INIT_CANDIDATES:
        if candidate.is_file():
            return candidate
    return None


def _cgroup_parent(value: str) -> str:
    """dockerd's rule for cgroupfs: a path of plain names (a leading / is added)."""
    parts = [p for p in value.strip().split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ConfigError(f"invalid cgroup-parent {value!r}: want a path such as /pydesk")
    return "/" + "/".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + " ".join(str(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _check_host(host: str) -> None:
    if host.startswith("unix://") and len(host) > len("unix://"):
        return
    match = re.fullmatch(r"tcp://(127\.0\.0\.1|localhost|\[::1\]):(\d{1,5})", host)
    if match is None:
        raise ConfigError(f"invalid host {host!r}: want unix:///path or tcp://127.0.0.1:PORT "
                          f"(the API is never served unauthenticated beyond loopback)")


def _check_log(log: LogConfig, path: Path) -> None:
    if log.driver not in LOG_DRIVERS:
        raise ConfigError(f"unknown log driver {log.driver!r}: want one of "
                          f"{', '.join(LOG_DRIVERS)}")
    unknown = sorted(set(log.opts) - JSON_FILE_OPTS)
    if unknown:
        raise ConfigError(f"unknown log opt '{unknown[0]}' for {log.driver} log driver")
    try:
        if "max-size" in log.opts:
            parse_size(log.opts["max-size"])
        if "max-file" in log.opts and int(log.opts["max-file"]) < 1:
            raise ValueError("max-file must be at least 1")
    except ValueError as exc:
        raise ConfigError(f"invalid log-opts in {path}: {exc}") from None


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30}


def parse_size(text: str) -> int:
    """Docker's RAM sizes: ``10m`` = 10 MiB, ``512k``, ``1g``, plain bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match[2].lower() not in _UNITS:
        raise ValueError(f"invalid size {text!r}: want e.g. 10m, 512k, 1g")
    return int(float(match[1]) * _UNITS[match[2].lower()])
