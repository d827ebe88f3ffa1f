"""The Engine API's container configuration: ``Config`` and ``HostConfig`` as typed, frozen data.

``X.from_api(obj)`` decodes a request body with Docker's JSON rules (unknown fields ignored,
wrong types -> InvalidArgument with Go's message); ``x.to_api()`` renders what ``inspect``
shows; :func:`validate_create` applies dockerd's create-time checks (HTTP 400 messages);
:meth:`HostConfig.with_defaults` fills what dockerd stores. This package must never perform
I/O of its own (host facts come in as parameters) nor know about the OCI spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydeskd.daemon.config_types.config import Config, HealthConfig
from pydeskd.daemon.config_types.host_config import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    DEFAULT_SHM_SIZE,
    DeviceMapping,
    HostConfig,
    LogConfig,
    PortBinding,
    RestartPolicy,
    Ulimit,
)
from pydeskd.daemon.config_types.merge import entrypoint_and_args, merge_image_config
from pydeskd.daemon.config_types.mounts import (
    BindOptions,
    Mount,
    TmpfsOptions,
    VolumeOptions,
    tmpfs_mount_options,
)
from pydeskd.daemon.config_types.validate import (
    SecurityOptions,
    normalize_capabilities,
    parse_security_opt,
    validate_create,
)

NetworkingConfig = Mapping[str, Any]
"""Passed through as the raw JSON object for now (the network layer owns its meaning)."""


def networking_config_from_api(obj: Any) -> dict[str, Any]:
    """The NetworkingConfig of a create request, as a dict ({} when absent)."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        from pydeskd.daemon.config_types._decode import Fields
        raise Fields({}).error("NetworkingConfig", obj, "network.NetworkingConfig")
    return dict(obj)


__all__ = [
    "DEFAULT_MASKED_PATHS", "DEFAULT_READONLY_PATHS", "DEFAULT_SHM_SIZE", "BindOptions",
    "Config", "DeviceMapping", "HealthConfig", "HostConfig",
    "LogConfig", "Mount", "NetworkingConfig", "PortBinding", "RestartPolicy", "SecurityOptions",
    "TmpfsOptions", "Ulimit", "VolumeOptions", "entrypoint_and_args", "merge_image_config",
    "networking_config_from_api",
    "normalize_capabilities", "parse_security_opt", "tmpfs_mount_options", "validate_create",
]
