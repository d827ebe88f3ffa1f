"""Engine selection: which Docker API socket the ``pydesk`` CLI talks to.

Order: ``--host``/``-H``, then ``PYDESK_HOST``, then the mode (``--mode``, else ``mode`` in
``~/.pydesk/config.json``, else ``auto``): ``native`` is the passthrough socket of a pydeskd on
this Linux host, ``vm`` the host proxy socket of the pydesk VM, ``auto`` the first of the two that
answers ``/_ping`` (native first, on Linux only).

The logic is pure (:func:`select_engine` takes the environment, the configuration and a ping
function); the only side effects are :func:`ping_unix` and :func:`read_config`.
What it must never do: start an engine, or import docker-py (the CLI's start-up time).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

NATIVE_SOCKET = Path("/run/pydesk/docker.sock")
HOST_ENV = "PYDESK_HOST"


def vm_socket(home: Path | None = None) -> Path:
    """The VM mode's host proxy socket (served by the host agent)."""
    return (home or Path.home()) / ".pydesk" / "run" / "docker.sock"


def config_path(home: Path | None = None) -> Path:
    return (home or Path.home()) / ".pydesk" / "config.json"


class Mode(StrEnum):
    AUTO = "auto"
    NATIVE = "native"
    VM = "vm"


class NoEngineError(Exception):
    """No engine answers where the selection looked; ``hint`` says how to start one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = "start one with `sudo pydeskd` (Linux) or `pydesk vm start`"


@dataclass(frozen=True)
class Engine:
    """The chosen endpoint: a docker-py base URL and why it was chosen."""

    base_url: str
    source: str  # "flag", "env", "native", "vm"


def read_config(path: Path) -> dict[str, object]:
    """``~/.pydesk/config.json`` as a dict ({} when absent); ValueError when it is not JSON."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def ping_unix(path: Path, timeout: float = 1.0) -> bool:
    """True when a Docker API on the unix socket ``path`` answers ``GET /_ping`` with 200."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: pydesk\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _as_url(host: str) -> str:
    # A bare path is a unix socket, as docker's -H accepts "unix:///path" but users type paths.
    return f"unix://{host}" if host.startswith("/") else host


def parse_mode(text: str) -> Mode:
    try:
        return Mode(text)
    except ValueError:
        raise ValueError(f"unknown mode {text!r}: expected auto, native or vm") from None


def select_engine(*, host: str | None, mode: str | None, env: Mapping[str, str],
                  config: Mapping[str, object], ping: Callable[[Path], bool],
                  home: Path, platform: str = sys.platform) -> Engine:
    """Choose the engine; raises NoEngineError (nothing answers) or ValueError (bad mode)."""
    if host:
        return Engine(_as_url(host), "flag")
    if env.get(HOST_ENV):
        return Engine(_as_url(env[HOST_ENV]), "env")
    chosen = parse_mode(mode or str(config.get("mode", Mode.AUTO)))
    native, vm = NATIVE_SOCKET, vm_socket(home)
    candidates: list[tuple[str, Path]] = []
    if chosen is Mode.NATIVE or (chosen is Mode.AUTO and platform.startswith("linux")):
        candidates.append(("native", native))
    if chosen in (Mode.VM, Mode.AUTO):
        candidates.append(("vm", vm))
    for source, path in candidates:
        if ping(path):
            return Engine(f"unix://{path}", source)
    tried = " nor ".join(str(p) for _, p in candidates)
    raise NoEngineError(f"no engine: neither {tried} answers" if len(candidates) > 1
                        else f"no engine: {tried} does not answer")


def resolve(host: str | None = None, mode: str | None = None) -> Engine:
    """The engine for this process: the real environment, config file and pings."""
    home = Path.home()
    config = read_config(config_path(home))
    return select_engine(host=host, mode=mode, env=os.environ, config=config, ping=ping_unix,
                         home=home)
