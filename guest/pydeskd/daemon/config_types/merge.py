"""The container Config completed from the image's config, as dockerd does at create.

``docker run IMAGE args`` replaces the image's Cmd; ``--entrypoint X`` also drops the image's
Cmd; ``--entrypoint ""`` resets the image's entrypoint; Env, Labels, ExposedPorts, Volumes
and Healthcheck are merged key by key; User, WorkingDir and StopSignal fall back to the
image's. Pure; the daemon stores the result and inspect shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types.config import Config, HealthConfig


def merge_image_config(config: Config, image: Mapping[str, Any] | None) -> Config:
    """moby's merge() + mergeAndVerifyConfig. ``image`` is the image config's ``config``
    object (ImageConfig.config). Raises InvalidArgument("no command specified")."""
    img = Config.from_api(image or {}, struct="Image", path="Config.")
    env = config.env
    if not env:
        env = img.env
    else:
        keys = {e.partition("=")[0] for e in env}
        env = env + tuple(e for e in img.env or () if e.partition("=")[0] not in keys)
    labels = dict(config.labels or {})
    for key, value in (img.labels or {}).items():
        labels.setdefault(key, value)
    cmd, entrypoint = config.cmd, config.entrypoint
    if not entrypoint:
        if not cmd:
            cmd = img.cmd
        if entrypoint is None:
            entrypoint = img.entrypoint
    if entrypoint is not None and len(entrypoint) == 1 and entrypoint[0] == "":
        entrypoint = None
    if not entrypoint and not cmd:
        raise InvalidArgument("no command specified")
    exposed = config.exposed_ports
    if not exposed:
        exposed = img.exposed_ports
    elif img.exposed_ports:
        exposed = exposed + tuple(p for p in img.exposed_ports if p not in exposed)
    volumes = config.volumes
    if not volumes:
        volumes = img.volumes
    elif img.volumes:
        volumes = volumes + tuple(v for v in img.volumes if v not in volumes)
    return replace(
        config, user=config.user or img.user, exposed_ports=exposed, env=env, labels=labels,
        cmd=cmd, entrypoint=entrypoint, healthcheck=_health(config.healthcheck, img.healthcheck),
        working_dir=config.working_dir or img.working_dir, volumes=volumes,
        stop_signal=config.stop_signal or img.stop_signal)


def _health(user: HealthConfig | None, image: HealthConfig | None) -> HealthConfig | None:
    if image is None or user is None:
        return user if image is None else image
    return HealthConfig(
        test=user.test or image.test, interval=user.interval or image.interval,
        timeout=user.timeout or image.timeout,
        start_period=user.start_period or image.start_period,
        start_interval=user.start_interval or image.start_interval,
        retries=user.retries or image.retries)


def entrypoint_and_args(config: Config) -> tuple[str, tuple[str, ...]]:
    """Docker's Path and Args (inspect) for a merged Config."""
    if not config.entrypoint:
        cmd = config.cmd or ()
        if not cmd:
            raise InvalidArgument("no command specified")
        return cmd[0], tuple(cmd[1:])
    return config.entrypoint[0], (*config.entrypoint[1:], *(config.cmd or ()))

