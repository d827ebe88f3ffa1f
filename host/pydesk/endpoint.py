"""Engine selection: which Docker API socket the ``pydesk`` CLI talks to.

Order: ``--host``/``-H``, then ``PYDESK_HOST``, then the mode (``--mode``, else ``mode`` in
``~/.pydesk/config.json``, else ``auto``): ``native`` is the passthrough socket of a pydeskd on
this Linux host, ``vm`` the host proxy socket of the pydesk VM, ``auto`` the first of the two that
answers ``/_ping`` (native first, on Linux only). ``$PYDESK_HOME`` moves the VM's socket as it
moves the instance files. :func:`explain_engine` keeps the reasons (``pydesk context``,
``pydesk doctor``); :func:`select_engine` turns "nothing answers" into :class:`NoEngineError`
whose hint says how to start an engine (``sudo pydesk engine start`` on Linux).

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
PYDESK_HOME_ENV = "PYDESK_HOME"


def vm_socket(home: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The VM mode's host proxy socket (served by the host agent): ``$PYDESK_HOME/run/
    docker.sock`` when PYDESK_HOME is set (as the instance files), else ``~/.pydesk/run/...``."""
    env = os.environ if env is None else env
    if env.get(PYDESK_HOME_ENV):
        return Path(env[PYDESK_HOME_ENV]) / "run" / "docker.sock"
    return (home or Path.home()) / ".pydesk" / "run" / "docker.sock"


def config_path(home: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The CLI's configuration: ``$PYDESK_HOME/config.json``, else ``~/.pydesk/config.json``."""
    env = os.environ if env is None else env
    if env.get(PYDESK_HOME_ENV):
        return Path(env[PYDESK_HOME_ENV]) / "config.json"
    return (home or Path.home()) / ".pydesk" / "config.json"


class Mode(StrEnum):
    AUTO = "auto"
    NATIVE = "native"
    VM = "vm"


class NoEngineError(Exception):
    """No engine answers where the selection looked; ``hint`` says how to start one."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or start_hint(None, "linux")


def start_hint(mode: Mode | None, platform: str) -> str:
    """How to start an engine for ``mode`` on ``platform`` (None: whichever fits)."""
    native = "start the native engine: `sudo pydesk engine start`"
    vm = "start the VM: `pydesk vm start`"
    if mode is Mode.VM or not platform.startswith("linux"):
        return vm
    if mode is Mode.NATIVE:
        return native
    return f"{native} (or {vm.removeprefix('start the VM: ')} for a VM)"


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


@dataclass(frozen=True)
class Candidate:
    """A socket the selection tried (``answered``) or skipped because an earlier one answered
    (``answered`` None)."""

    source: str  # "native" or "vm"
    path: Path
    answered: bool | None


@dataclass(frozen=True)
class Selection:
    """The whole decision, for ``pydesk context`` and ``pydesk doctor``: the engine (None when
    nothing answers), the mode and where it came from, and each socket tried."""

    engine: Engine | None
    mode: Mode | None  # None when -H or PYDESK_HOST decided
    mode_source: str  # "--mode", "config", "default", or "" (-H / PYDESK_HOST)
    candidates: tuple[Candidate, ...]
    platform: str

    def reason(self) -> str:
        """One sentence: why this engine (or why none)."""
        if self.engine is not None and self.engine.source == "flag":
            return "chosen by --host/-H"
        if self.engine is not None and self.engine.source == "env":
            return f"chosen by ${HOST_ENV}"
        assert self.mode is not None
        where = {"--mode": "--mode", "config": "~/.pydesk/config.json",
                 "default": "the default"}[self.mode_source]
        tried = "; ".join(f"{c.source} {c.path} " + (
            "answers" if c.answered else "not tried" if c.answered is None else
            "does not answer") for c in self.candidates)
        return f"mode {self.mode} (from {where}): {tried}"

    def error(self) -> NoEngineError:
        paths = [str(c.path) for c in self.candidates]
        message = (f"no engine: neither {' nor '.join(paths)} answers" if len(paths) > 1
                   else f"no engine: {paths[0]} does not answer")
        return NoEngineError(message, start_hint(self.mode, self.platform))


def explain_engine(*, host: str | None, mode: str | None, env: Mapping[str, str],
                   config: Mapping[str, object], ping: Callable[[Path], bool],
                   home: Path, platform: str = sys.platform) -> Selection:
    """The selection and its reasons; ValueError for a bad mode. Never raises NoEngineError."""
    if host:
        return Selection(Engine(_as_url(host), "flag"), None, "", (), platform)
    if env.get(HOST_ENV):
        return Selection(Engine(_as_url(env[HOST_ENV]), "env"), None, "", (), platform)
    mode_source = "--mode" if mode else "config" if config.get("mode") else "default"
    chosen = parse_mode(mode or str(config.get("mode", Mode.AUTO)))
    paths: list[tuple[str, Path]] = []
    if chosen is Mode.NATIVE or (chosen is Mode.AUTO and platform.startswith("linux")):
        paths.append(("native", NATIVE_SOCKET))
    if chosen in (Mode.VM, Mode.AUTO):
        paths.append(("vm", vm_socket(home, env)))
    engine: Engine | None = None
    candidates = []
    for source, path in paths:
        if engine is not None:
            candidates.append(Candidate(source, path, None))
            continue
        answered = ping(path)
        candidates.append(Candidate(source, path, answered))
        if answered:
            engine = Engine(f"unix://{path}", source)
    return Selection(engine, chosen, mode_source, tuple(candidates), platform)


def select_engine(*, host: str | None, mode: str | None, env: Mapping[str, str],
                  config: Mapping[str, object], ping: Callable[[Path], bool],
                  home: Path, platform: str = sys.platform) -> Engine:
    """Choose the engine; raises NoEngineError (nothing answers) or ValueError (bad mode)."""
    selection = explain_engine(host=host, mode=mode, env=env, config=config, ping=ping,
                               home=home, platform=platform)
    if selection.engine is None:
        raise selection.error()
    return selection.engine


def explain(host: str | None = None, mode: str | None = None) -> Selection:
    """:func:`explain_engine` for this process (real environment, config file, pings)."""
    home = Path.home()
    return explain_engine(host=host, mode=mode, env=os.environ,
                          config=read_config(config_path(home)), ping=ping_unix, home=home)


def resolve(host: str | None = None, mode: str | None = None) -> Engine:
    """The engine for this process: the real environment, config file and pings."""
    home = Path.home()
    config = read_config(config_path(home))
    return select_engine(host=host, mode=mode, env=os.environ, config=config, ping=ping_unix,
                         home=home)
