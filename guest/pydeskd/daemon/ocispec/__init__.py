"""Container config -> OCI runtime spec, with Docker's defaults (dockerd's createSpec).

``build_spec(SpecInputs(...)) -> dict`` is the entry point; ``resolve_user`` resolves
``--user`` inside an image's rootfs; ``default_profile``/``resolve_profile`` are Docker's
default seccomp profile and its resolution. This package produces data only: it must never
mount, create files, or start processes (host facts come through ``HostView``).
"""

from __future__ import annotations

from pydeskd.daemon.ocispec.build import SpecInputs, build_spec
from pydeskd.daemon.ocispec.defaults import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PATH_ENV,
    INIT_PATH_IN_CONTAINER,
)
from pydeskd.daemon.ocispec.host import DeviceNode, HostView, RealHost
from pydeskd.daemon.ocispec.mounts import SpecMount, bind_mount, merge_tmpfs_options, tmpfs_mount
from pydeskd.daemon.ocispec.seccomp_default import default_profile, resolve_profile
from pydeskd.daemon.ocispec.user import ExecUser, resolve_user

__all__ = [
    "DEFAULT_CAPABILITIES", "DEFAULT_PATH_ENV", "INIT_PATH_IN_CONTAINER", "DeviceNode",
    "ExecUser", "HostView", "RealHost", "SpecInputs", "SpecMount", "bind_mount", "build_spec",
    "default_profile", "merge_tmpfs_options", "resolve_profile", "resolve_user", "tmpfs_mount",
]
