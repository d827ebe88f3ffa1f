"""The container Config completed from the image's config, as dockerd does at create."""

from __future__ import annotations

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types import (
    Config,
    HealthConfig,
    entrypoint_and_args,
    merge_image_config,
)

IMAGE = {"Cmd": ["nginx", "-g", "daemon off;"], "Entrypoint": ["/docker-entrypoint.sh"],
         "Env": ["PATH=/usr/bin", "NGINX_VERSION=1"], "User": "101", "WorkingDir": "/srv",
         "ExposedPorts": {"80/tcp": {}}, "Labels": {"maintainer": "x", "v": "1"},
         "StopSignal": "SIGQUIT", "Volumes": {"/cache": {}},
         "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5 * 10**9, "Retries": 3}}


def test_nothing_given_takes_the_image() -> None:
    c = merge_image_config(Config(), IMAGE)
    assert entrypoint_and_args(c) == ("/docker-entrypoint.sh", ("nginx", "-g", "daemon off;"))
    assert c.env == ("PATH=/usr/bin", "NGINX_VERSION=1") and c.user == "101"
    assert c.working_dir == "/srv" and c.stop_signal == "SIGQUIT"
    assert c.exposed_ports == ("80/tcp",) and c.volumes == ("/cache",)
    assert c.labels == {"maintainer": "x", "v": "1"}


def test_args_replace_cmd_and_entrypoint_resets_cmd() -> None:
    c = merge_image_config(Config(cmd=("sh",)), IMAGE)
    assert entrypoint_and_args(c) == ("/docker-entrypoint.sh", ("sh",))
    c = merge_image_config(Config(entrypoint=("/bin/echo",)), IMAGE)
    assert entrypoint_and_args(c) == ("/bin/echo", ())
    c = merge_image_config(Config(entrypoint=("",), cmd=("id",)), IMAGE)
    assert c.entrypoint is None and entrypoint_and_args(c) == ("id", ())
    with pytest.raises(InvalidArgument, match="no command specified"):
        merge_image_config(Config(entrypoint=("",)), IMAGE)
    with pytest.raises(InvalidArgument, match="no command specified"):
        merge_image_config(Config(), {})


def test_env_labels_ports_health_merge_key_by_key() -> None:
    c = merge_image_config(Config(
        env=("NGINX_VERSION=2", "A=1"), labels={"v": "2"}, exposed_ports=("443/tcp",),
        healthcheck=HealthConfig(interval=10**9), user="0", working_dir="/w"), IMAGE)
    assert c.env == ("NGINX_VERSION=2", "A=1", "PATH=/usr/bin")
    assert c.labels == {"v": "2", "maintainer": "x"}
    assert c.exposed_ports == ("443/tcp", "80/tcp")
    assert c.healthcheck == HealthConfig(test=("CMD", "true"), interval=10**9, retries=3)
    assert (c.user, c.working_dir) == ("0", "/w")
    assert merge_image_config(c, IMAGE) == c  # merging twice changes nothing
