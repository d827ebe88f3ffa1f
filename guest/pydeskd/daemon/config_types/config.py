"""The container ``Config`` of the Engine API (the portable half of a create request).

Decoded from the request body with Docker's JSON rules, validated with Docker's messages,
and rendered back for ``inspect``. It only describes what the client asked for: merging
with the image's config happens in the spec builder, never here.
"""

from __future__ import annotations

import posixpath
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types._decode import Fields

MINIMUM_DURATION_NS = 1_000_000  # Docker's containertypes.MinimumDuration: 1ms
MAX_HOSTNAME_LEN = 64


@dataclass(frozen=True)
class HealthConfig:
    """Healthcheck: durations in nanoseconds as the API sends them; 0 = inherit/default."""

    test: tuple[str, ...] | None = None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    @staticmethod
    def from_fields(f: Fields) -> HealthConfig:
        return HealthConfig(
            test=f.str_list("Test"), interval=f.integer("Interval"), timeout=f.integer("Timeout"),
            start_period=f.integer("StartPeriod"), start_interval=f.integer("StartInterval"),
            retries=f.integer("Retries", "int"))

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {}  # every field is omitempty in Docker
        if self.test:
            out["Test"] = list(self.test)
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period),
                           ("StartInterval", self.start_interval), ("Retries", self.retries)):
            if value:
                out[key] = value
        return out

    def validate(self) -> None:
        for name, value in (("Interval", self.interval), ("Timeout", self.timeout)):
            if value != 0 and value < MINIMUM_DURATION_NS:
                raise InvalidArgument(f"{name} in Healthcheck cannot be less than 1ms")
        if self.retries < 0:
            raise InvalidArgument("Retries in Healthcheck cannot be negative")
        for name, value in (("StartPeriod", self.start_period),
                            ("StartInterval", self.start_interval)):
            if value != 0 and value < MINIMUM_DURATION_NS:
                raise InvalidArgument(f"{name} in Healthcheck cannot be less than 1ms")


@dataclass(frozen=True)
class Config:
    """Docker's ``container.Config``. ``None`` keeps "not given / null" apart from empty.

    ``cmd``/``entrypoint`` None means "inherit from the image"; an explicit empty or
    ``[""]`` entrypoint means "reset it" (``--entrypoint ""``), as Docker does.
    """

    hostname: str = ""
    domainname: str = ""
    user: str = ""
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    exposed_ports: tuple[str, ...] | None = None
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    env: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    healthcheck: HealthConfig | None = None
    args_escaped: bool = False
    image: str = ""
    volumes: tuple[str, ...] | None = None
    working_dir: str = ""
    entrypoint: tuple[str, ...] | None = None
    network_disabled: bool = False
    on_build: tuple[str, ...] | None = None
    labels: Mapping[str, str] | None = field(default=None)
    stop_signal: str = ""
    stop_timeout: int | None = None
    shell: tuple[str, ...] | None = None

    @staticmethod
    def from_api(obj: Mapping[str, Any], struct: str = "CreateRequest",
                 path: str = "") -> Config:
        """Decode a Config object (for create: the request body itself).

        Raises InvalidArgument (HTTP 400) with Go's message for a field of the wrong type.
        """
        if not isinstance(obj, Mapping):
            raise InvalidArgument("config cannot be empty in order to create a container")
        f = Fields(obj, struct, path)
        health = f.obj("Healthcheck", "v1.HealthcheckConfig")
        return Config(
            hostname=f.text("Hostname"), domainname=f.text("Domainname"), user=f.text("User"),
            attach_stdin=f.flag("AttachStdin"), attach_stdout=f.flag("AttachStdout"),
            attach_stderr=f.flag("AttachStderr"),
            exposed_ports=f.key_set("ExposedPorts", "network.PortSet"),
            tty=f.flag("Tty"), open_stdin=f.flag("OpenStdin"), stdin_once=f.flag("StdinOnce"),
            env=f.str_list("Env"), cmd=f.str_slice("Cmd"),
            healthcheck=None if health is None else HealthConfig.from_fields(health),
            args_escaped=f.flag("ArgsEscaped"), image=f.text("Image"),
            volumes=f.key_set("Volumes", "map[string]struct {}"),
            working_dir=f.text("WorkingDir"), entrypoint=f.str_slice("Entrypoint"),
            network_disabled=f.flag("NetworkDisabled"), on_build=f.str_list("OnBuild"),
            labels=f.str_map("Labels"), stop_signal=f.text("StopSignal"),
            stop_timeout=f.opt_integer("StopTimeout", "int"), shell=f.str_slice("Shell"))

    def to_api(self) -> dict[str, Any]:
        """The Config as ``GET /containers/{id}/json`` shows it (Docker's omitempty rules)."""
        out: dict[str, Any] = {
            "Hostname": self.hostname, "Domainname": self.domainname, "User": self.user,
            "AttachStdin": self.attach_stdin, "AttachStdout": self.attach_stdout,
            "AttachStderr": self.attach_stderr,
        }
        if self.exposed_ports:
            out["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        out |= {
            "Tty": self.tty, "OpenStdin": self.open_stdin, "StdinOnce": self.stdin_once,
            "Env": _list(self.env), "Cmd": _list(self.cmd),
        }
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_api()
        if self.args_escaped:
            out["ArgsEscaped"] = True
        out |= {
            "Image": self.image,
            "Volumes": None if self.volumes is None else {v: {} for v in self.volumes},
            "WorkingDir": self.working_dir, "Entrypoint": _list(self.entrypoint),
        }
        if self.network_disabled:
            out["NetworkDisabled"] = True
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        out["Labels"] = None if self.labels is None else dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.stop_timeout is not None:
            out["StopTimeout"] = self.stop_timeout
        if self.shell:
            out["Shell"] = list(self.shell)
        return out

    def validate(self) -> Config:
        """Docker's validateContainerConfig (+ the hostname length); returns the Config with
        WorkingDir cleaned as Docker stores it. Raises InvalidArgument."""
        working_dir = self.working_dir
        if working_dir:
            if not working_dir.startswith("/"):
                raise InvalidArgument(f"the working directory '{working_dir}' is invalid, "
                                      "it needs to be an absolute path")
            working_dir = posixpath.normpath(working_dir)
            if working_dir.startswith("//"):
                working_dir = "/" + working_dir.lstrip("/")
        if self.stop_signal and not _valid_signal(self.stop_signal):
            raise InvalidArgument(f"Invalid signal: {self.stop_signal}")
        for env in self.env or ():
            if env.partition("=")[0] == "":
                raise InvalidArgument(f"invalid environment variable: {env}")
        if self.healthcheck is not None:
            self.healthcheck.validate()
        if len(self.hostname) > MAX_HOSTNAME_LEN:
            raise InvalidArgument(f'hostname "{self.hostname}" is too long '
                                  f"(maximum {MAX_HOSTNAME_LEN} bytes)")
        if working_dir == self.working_dir:
            return self
        return replace(self, working_dir=working_dir)


def _list(value: tuple[str, ...] | None) -> list[str] | None:
    return None if value is None else list(value)


_SIGNAL_NAMES = frozenset(s.name.removeprefix("SIG") for s in signal.Signals) | {"IOT", "POLL"}


def _valid_signal(text: str) -> bool:
    """Docker's signal.ParseSignal: a non-zero number, or a name with or without SIG."""
    if text.isdigit():
        return int(text) != 0
    name = text.upper().removeprefix("SIG")
    for base in ("RTMIN+", "RTMAX-"):
        if name.startswith(base) and name[6:].isdigit():
            return 0 <= int(name[6:]) <= signal.SIGRTMAX - signal.SIGRTMIN
    return name in _SIGNAL_NAMES
