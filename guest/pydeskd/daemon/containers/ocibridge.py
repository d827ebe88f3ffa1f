"""The container's config.json through the daemon's spec builder (:mod:`pydeskd.daemon.ocispec`,
Docker's full defaults: seccomp profile, masks, devices, sysctls, rlimits).

What it is for: turning what the container service holds (the merged Config and the HostConfig
as Docker JSON, the resolved bind and volume mounts, the paths of its /etc files) into the
builder's typed inputs (the network namespace the network layer prepared is joined by
path). Tmpfs mounts are not passed: the builder takes them from the
HostConfig itself. Pure: no I/O beyond what the builder does (reading the rootfs's passwd).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydeskd.daemon.config_types import Config, HostConfig
from pydeskd.daemon.containers.spec import BundleInputs
from pydeskd.daemon.ocispec import SpecInputs, bind_mount, build_spec


def docker_spec(inputs: BundleInputs, cgroup_parent: str,
                init_path: Path | None = None) -> dict[str, Any]:
    """Raises InvalidArgument (an unknown user, a bad device or seccomp profile...)."""
    config = Config.from_api(dict(inputs.config))
    host = HostConfig.from_api(dict(inputs.host_config))
    mounts = tuple(bind_mount(m.source, m.destination, read_only=m.read_only,
                              propagation=m.propagation or "rprivate")
                   for m in inputs.mounts if m.type != "tmpfs")
    return build_spec(SpecInputs(
        container_id=inputs.cid, config=config, host_config=host, rootfs=str(inputs.rootfs),
        mounts=mounts, hosts_path=inputs.hosts_path, hostname_path=inputs.hostname_path,
        resolv_conf_path=inputs.resolv_conf_path, cgroup_parent=cgroup_parent,
        namespace_paths={"network": inputs.netns_path} if inputs.netns_path else {},
        init_path=str(init_path) if init_path is not None else None))
