"""The docker CLI's context named ``pydesk``: written straight into the docker CLI's store.

What it is for: ``docker --context pydesk ps`` (or ``docker context use pydesk``) reaches the
pydesk engine's host socket without the docker CLI being installed when pydesk sets it up. The
store, as the docker CLI reads it: ``$DOCKER_CONFIG`` (else ``~/.docker``) holds ``config.json``
(``currentContext`` names the context in use) and ``contexts/meta/<sha256(name)>/meta.json``::

    {"Name": "pydesk", "Metadata": {"Description": "..."},
     "Endpoints": {"docker": {"Host": "unix:///...", "SkipTLSVerify": false}}}

Every write is atomic (temporary file, rename), and ``config.json`` keeps every other key.
What it must never do: run the docker CLI, or change the user's current context unless asked
(:func:`use_context`); removing the context in use resets the current context to the default,
as ``docker context rm --force`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONTEXT_NAME = "pydesk"
DESCRIPTION = "pydesk: the Docker Desktop-style engine (VM host socket)"
CONFIG_ENV = "DOCKER_CONFIG"


def docker_config_dir(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker`` (the docker CLI's own rule)."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return (home or Path.home()) / ".docker"


def meta_file(config_dir: Path, name: str = CONTEXT_NAME) -> Path:
    """Where the docker CLI looks for the context ``name``: keyed by the name's sha256."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    return config_dir / "contexts" / "meta" / digest / "meta.json"


@dataclass(frozen=True)
class DockerContext:
    name: str
    host: str
    description: str = ""

    def to_json(self) -> dict[str, object]:
        return {"Name": self.name, "Metadata": {"Description": self.description},
                "Endpoints": {"docker": {"Host": self.host, "SkipTLSVerify": False}}}


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_object(path: Path) -> dict[str, object]:
    """A JSON object file ({} when absent); ValueError when it is not a JSON object."""
    try:
        data = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def write_context(config_dir: Path, host: str, name: str = CONTEXT_NAME,
                  description: str = DESCRIPTION) -> Path:
    """Creates or updates the context ``name`` -> ``host`` (``unix:///...``); its meta.json."""
    path = meta_file(config_dir, name)
    context = DockerContext(name, host, description)
    _write_atomic(path, json.dumps(context.to_json(), indent=2).encode() + b"\n")
    return path


def read_context(config_dir: Path, name: str = CONTEXT_NAME) -> DockerContext | None:
    """The context ``name`` as stored, or None; ValueError when its meta.json is damaged."""
    data = _read_object(meta_file(config_dir, name))
    if not data:
        return None
    try:
        endpoints = data["Endpoints"]
        assert isinstance(endpoints, dict)
        host = str(endpoints["docker"]["Host"])
    except (KeyError, TypeError, AssertionError) as e:
        raise ValueError(f"{meta_file(config_dir, name)}: no docker endpoint") from e
    metadata = data.get("Metadata")
    description = str(metadata.get("Description", "")) if isinstance(metadata, dict) else ""
    return DockerContext(str(data.get("Name", name)), host, description)


def current_context(config_dir: Path) -> str:
    """The docker CLI's current context (``default`` when config.json names none)."""
    return str(_read_object(config_dir / "config.json").get("currentContext") or "default")


def use_context(config_dir: Path, name: str = CONTEXT_NAME) -> None:
    """Sets ``currentContext`` in config.json, keeping every other key (auths, plugins...)."""
    path = config_dir / "config.json"
    config = _read_object(path)
    if name == "default":
        config.pop("currentContext", None)
    else:
        config["currentContext"] = name
    # config.json can hold registry credentials: it stays private, as the docker CLI makes it.
    _write_atomic(path, json.dumps(config, indent="\t").encode() + b"\n", 0o600)


def remove_context(config_dir: Path, name: str = CONTEXT_NAME) -> bool:
    """Deletes the context (False when it did not exist); if it was the current one, the
    current context goes back to ``default``."""
    path = meta_file(config_dir, name)
    existed = path.exists()
    if existed:
        path.unlink()
        with contextlib.suppress(OSError):  # something else lives there: not ours to remove
            path.parent.rmdir()
    if current_context(config_dir) == name:
        use_context(config_dir, "default")
    return existed
