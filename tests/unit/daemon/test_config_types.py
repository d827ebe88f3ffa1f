"""Config/HostConfig: decoding with Docker's JSON rules, inspect rendering, create validation."""

from __future__ import annotations

from typing import Any

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.config_types import (
    Config,
    HostConfig,
    Mount,
    RestartPolicy,
    TmpfsOptions,
    normalize_capabilities,
    parse_security_opt,
    tmpfs_mount_options,
    validate_create,
)

FULL_CONFIG: dict[str, Any] = {
    "Hostname": "h", "Domainname": "example.org", "User": "1000:1000",
    "AttachStdin": True, "AttachStdout": True, "AttachStderr": True,
    "ExposedPorts": {"80/tcp": {}}, "Tty": True, "OpenStdin": True, "StdinOnce": True,
    "Env": ["A=1", "B"], "Cmd": ["sh", "-c", "true"],
    "Healthcheck": {"Test": ["CMD", "true"], "Interval": 10**9, "Timeout": 2 * 10**9,
                    "StartPeriod": 3 * 10**9, "StartInterval": 10**9, "Retries": 3},
    "Image": "busybox", "Volumes": {"/data": {}}, "WorkingDir": "/w",
    "Entrypoint": ["/bin/sh"], "NetworkDisabled": True, "Labels": {"a": "b"},
    "StopSignal": "SIGUSR1", "StopTimeout": 5,
}


def test_config_round_trip_keeps_every_field() -> None:
    assert Config.from_api(FULL_CONFIG).to_api() == FULL_CONFIG


def test_config_nulls_and_omitempty_as_docker() -> None:
    api = Config.from_api({"Image": "busybox"}).to_api()
    assert api["Cmd"] is None and api["Entrypoint"] is None and api["Env"] is None
    assert api["Volumes"] is None and api["Labels"] is None
    for omitted in ("ExposedPorts", "Healthcheck", "StopSignal", "StopTimeout",
                    "NetworkDisabled", "OnBuild", "Shell", "ArgsEscaped"):
        assert omitted not in api


def test_cmd_and_entrypoint_accept_a_string_and_keep_empty_apart_from_null() -> None:
    c = Config.from_api({"Cmd": "echo hi", "Entrypoint": []})
    assert c.cmd == ("echo hi",) and c.entrypoint == ()
    assert Config.from_api({"Entrypoint": None}).entrypoint is None


def test_nulls_inside_lists_and_maps_are_empty_strings_as_in_go() -> None:
    c = Config.from_api({"Env": ["A=1", None], "Labels": {"a": None}})
    assert c.env == ("A=1", "") and c.labels == {"a": ""}


def test_field_names_match_case_insensitively_and_unknown_fields_are_ignored() -> None:
    c = Config.from_api({"env": ["A=1"], "NoSuchField": {"x": 1}, "tty": True})
    assert c.env == ("A=1",) and c.tty


@pytest.mark.parametrize(("body", "message"), [
    ({"Env": "A=1"}, "cannot unmarshal string into Go struct field CreateRequest.Env of type "
                     "[]string"),
    ({"Env": [1]}, "cannot unmarshal number into Go struct field CreateRequest.Env of type "
                   "string"),
    ({"Cmd": 5}, "cannot unmarshal number into Go struct field CreateRequest.Cmd of type string"),
    ({"Tty": "true"}, "cannot unmarshal string into Go struct field CreateRequest.Tty of type "
                      "bool"),
    ({"StopTimeout": 1.5}, "cannot unmarshal number 1.5 into Go struct field "
                           "CreateRequest.StopTimeout of type int"),
    ({"Labels": {"a": 1}}, "CreateRequest.Labels of type string"),
    ({"Labels": []}, "cannot unmarshal array into Go struct field CreateRequest.Labels of "
                     "type map[string]string"),
    ({"Healthcheck": {"Interval": "1s"}}, "HealthcheckConfig.Healthcheck.Interval of type int64"),
    ({"Hostname": 5}, "number into Go struct field CreateRequest.Hostname of type string"),
])
def test_config_wrong_types(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        Config.from_api(body)
    assert str(e.value).startswith("invalid JSON: json: ")
    assert message in str(e.value)


@pytest.mark.parametrize(("body", "message"), [
    ({"Memory": "1g"}, "HostConfig.HostConfig.Memory of type int64"),
    ({"Privileged": 1}, "HostConfig.HostConfig.Privileged of type bool"),
    ({"Binds": "/a:/b"}, "HostConfig.HostConfig.Binds of type []string"),
    ({"RestartPolicy": "always"}, "HostConfig.RestartPolicy of type container.RestartPolicy"),
    ({"RestartPolicy": {"MaximumRetryCount": "3"}},
     "RestartPolicy.HostConfig.RestartPolicy.MaximumRetryCount of type int"),
    ({"Ulimits": [{"Name": "nofile", "Soft": "1"}]},
     "Ulimit.HostConfig.Ulimits.Soft of type int64"),
    ({"Mounts": [{"Type": 1}]}, "Mount.HostConfig.Mounts.Type of type string"),
    ({"PidsLimit": True}, "HostConfig.PidsLimit of type int64"),
    ({"Memory": 2**64}, "HostConfig.Memory of type int64"),
])
def test_host_config_wrong_types(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid JSON") as e:
        HostConfig.from_api(body)
    assert message in str(e.value)


FULL_HOST: dict[str, Any] = {
    "Binds": ["/a:/b:ro"], "ContainerIDFile": "", "NetworkMode": "bridge",
    "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
    "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
    "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}, "AutoRemove": False,
    "VolumesFrom": ["c1"], "CapAdd": ["NET_ADMIN"], "CapDrop": ["MKNOD"],
    "Dns": ["1.1.1.1"], "DnsOptions": ["ndots:2"], "DnsSearch": ["example.org"],
    "ExtraHosts": ["db:10.0.0.2"], "GroupAdd": ["audio"], "IpcMode": "shareable",
    "PidMode": "host", "Privileged": False, "PublishAllPorts": True, "ReadonlyRootfs": True,
    "SecurityOpt": ["no-new-privileges"], "Tmpfs": {"/run": "size=1m"}, "UTSMode": "",
    "UsernsMode": "", "ShmSize": 1 << 20, "Sysctls": {"net.ipv4.ip_forward": "1"},
    "Runtime": "runc", "Isolation": "", "Memory": 64 << 20, "MemoryReservation": 32 << 20,
    "MemorySwap": 128 << 20, "NanoCpus": 500_000_000, "CpuShares": 512, "CpuPeriod": 0,
    "CpuQuota": 0, "CpusetCpus": "0", "CpusetMems": "0", "PidsLimit": 100,
    "Ulimits": [{"Name": "nofile", "Hard": 2048, "Soft": 1024}],
    "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x",
                 "CgroupPermissions": "rw"}],
    "OomKillDisable": True, "Init": True,
    "Mounts": [{"Type": "tmpfs", "Target": "/t",
                "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o700}},
               {"Type": "bind", "Source": "/s", "Target": "/d", "ReadOnly": True,
                "BindOptions": {"Propagation": "rslave"}},
               {"Type": "volume", "Source": "v", "Target": "/v",
                "VolumeOptions": {"NoCopy": True, "Subpath": "sub"}}],
    "MaskedPaths": ["/proc/kcore"], "ReadonlyPaths": [],
}


def test_host_config_round_trip() -> None:
    api = HostConfig.from_api(FULL_HOST).to_api()
    for key, value in FULL_HOST.items():
        assert api[key] == value, key
    # keys Docker always returns, even for features pydesk does not implement
    for key in ("VolumeDriver", "ConsoleSize", "Cgroup", "BlkioWeight", "CpuCount",
                "DeviceRequests", "IOMaximumBandwidth", "CgroupParent", "OomScoreAdj"):
        assert key in api


def test_host_config_null_vs_empty_lists_survive() -> None:
    api = HostConfig.from_api({"Dns": [], "CapAdd": None}).to_api()
    assert api["Dns"] == [] and api["CapAdd"] is None and api["DnsSearch"] is None
    assert "Tmpfs" not in api and "Sysctls" not in api and "Mounts" not in api
    assert "Init" not in api and "Runtime" not in api


def test_with_defaults_as_dockerd_stores_them() -> None:
    h = HostConfig.from_api({"Memory": 64 << 20}).with_defaults(
        masked_paths=("/proc/kcore",), readonly_paths=("/proc/sys",))
    assert (h.network_mode, h.ipc_mode, h.runtime, h.shm_size) == (
        "bridge", "private", "runc", 64 << 20)
    assert h.memory_swap == 128 << 20 and h.restart_policy.name == "no"
    assert h.log_config.type == "json-file" and h.oom_kill_disable is False
    assert h.masked_paths == ("/proc/kcore",) and h.readonly_paths == ("/proc/sys",)
    assert "/proc/kcore" in (HostConfig().with_defaults().masked_paths or ())
    priv = HostConfig(privileged=True).with_defaults(masked_paths=("/x",))
    assert priv.masked_paths == () and priv.readonly_paths == ()
    assert HostConfig(memory=1 << 30, memory_swap=-1).with_defaults().memory_swap == -1


@pytest.mark.parametrize(("config", "host", "message"), [
    ({}, {"NanoCpus": 10**9, "CpuPeriod": 100000},
     "Conflicting options: Nano CPUs and CPU Period cannot both be set"),
    ({}, {"NanoCpus": 10**9, "CpuQuota": 50000},
     "Conflicting options: Nano CPUs and CPU Quota cannot both be set"),
    ({}, {"Memory": -1}, "Minimum memory limit allowed is 6MB"),
    ({}, {"Memory": 1 << 20}, "Minimum memory limit allowed is 6MB"),
    ({}, {"Memory": 64 << 20, "MemorySwap": 32 << 20},
     "Minimum memoryswap limit should be larger than memory limit, see usage"),
    ({}, {"MemorySwap": 64 << 20}, "You should always set the Memory limit when using"),
    ({}, {"Memory": 64 << 20, "MemoryReservation": 128 << 20},
     "Minimum memory limit can not be less than memory reservation limit, see usage"),
    ({}, {"NanoCpus": 64 * 10**9}, "range of CPUs is from 0.01 to 2.00, as there are only "
                                   "2 CPUs available"),
    ({}, {"CpuPeriod": 10}, "CPU cfs period can not be less than 1ms"),
    ({}, {"CpuQuota": 10}, "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
    ({}, {"CpuShares": -1}, "invalid CPU shares (-1): value must be a positive integer"),
    ({}, {"RestartPolicy": {"Name": "sometimes"}},
     "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
     "'on-failure', or 'unless-stopped'"),
    ({}, {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}},
     "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
    ({}, {"RestartPolicy": {"Name": "no", "MaximumRetryCount": -1}},
     "can only be used with 'on-failure' and cannot be negative"),
    ({}, {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}},
     "invalid restart policy: maximum retry count cannot be negative"),
    ({}, {"AutoRemove": True, "RestartPolicy": {"Name": "always"}},
     "can't create 'AutoRemove' container with restart policy"),
    ({"Hostname": "x"}, {"NetworkMode": "container:abc"},
     "conflicting options: hostname and the network mode"),
    ({}, {"NetworkMode": "container:"}, "invalid network mode: invalid container format"),
    ({}, {"NetworkMode": "container:abc", "PublishAllPorts": True},
     "conflicting options: port publishing and the container type network mode"),
    ({"Hostname": "x"}, {"UTSMode": "host"}, "conflicting options: hostname and the UTS mode"),
    ({}, {"CapAdd": ["NOPE"]}, 'invalid CapAdd: unknown capability: "CAP_NOPE"'),
    ({}, {"CapDrop": ["cap_bogus"]}, 'invalid CapDrop: unknown capability: "CAP_BOGUS"'),
    ({}, {"ExtraHosts": ["nohost"]}, 'bad format for add-host: "nohost"'),
    ({}, {"ExtraHosts": ["db:999.1.1.1"]}, 'invalid IP address in add-host: "999.1.1.1"'),
    ({}, {"PortBindings": {"http/tcp": []}}, 'invalid port specification: "http/tcp"'),
    ({}, {"IpcMode": "bogus"}, "invalid IPC mode: bogus"),
    ({}, {"PidMode": "container:"}, "invalid PID mode: container:"),
    ({}, {"UTSMode": "private"}, "invalid UTS mode: private"),
    ({}, {"ShmSize": -1}, "SHM size can not be less than 0"),
    ({}, {"Isolation": "hyperv"}, "invalid isolation (hyperv): linux only supports 'default'"),
    ({}, {"Tmpfs": {"run": ""}}, "invalid mount path: 'run' mount path must be absolute"),
    ({}, {"Mounts": [{"Type": "bind", "Source": "/no/such", "Target": "/x"}]},
     'invalid mount config for type "bind": bind source path does not exist: /no/such'),
    ({}, {"Mounts": [{"Type": "bind", "Target": "/x"}]},
     'invalid mount config for type "bind": field Source must not be empty'),
    ({}, {"Mounts": [{"Type": "volume", "Target": "/"}]},
     "invalid specification: destination can't be '/'"),
    ({}, {"Mounts": [{"Type": "volume", "Target": "rel"}]},
     "invalid mount path: 'rel' mount path must be absolute"),
    ({}, {"Mounts": [{"Type": "tmpfs", "Source": "x", "Target": "/t"}]},
     "field Source must not be specified"),
    ({}, {"Mounts": [{"Type": "tmpfs", "Target": "/t", "BindOptions": {}}]},
     "field BindOptions must not be specified"),
    ({}, {"Mounts": [{"Type": "floppy", "Target": "/t"}]}, "mount type unknown"),
    ({}, {"Mounts": [{"Type": "volume", "Target": "/t", "VolumeOptions": {"Subpath": "a"}}]},
     "must not set Subpath when using anonymous volumes"),
    ({}, {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/t",
                      "VolumeOptions": {"Subpath": "../a"}}]},
     "subpath must be a relative path within the volume"),
    ({}, {"Mounts": [{"Type": "tmpfs", "Target": "/t",
                      "TmpfsOptions": {"Options": [["uid", "0"]]}}]}, "invalid option: uid"),
    ({"WorkingDir": "rel"}, {},
     "the working directory 'rel' is invalid, it needs to be an absolute path"),
    ({"Env": ["=x"]}, {}, "invalid environment variable: =x"),
    ({"StopSignal": "SIGNOPE"}, {}, "Invalid signal: SIGNOPE"),
    ({"Healthcheck": {"Interval": 10}}, {}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Healthcheck": {"Retries": -1}}, {}, "Retries in Healthcheck cannot be negative"),
    ({"Healthcheck": {"StartPeriod": 5}}, {}, "StartPeriod in Healthcheck cannot be less than"),
    ({"Hostname": "h" * 65}, {}, "is too long (maximum 64 bytes)"),
])
def test_validate_create_rejects(config: dict[str, Any], host: dict[str, Any],
                                 message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate_create(Config.from_api(config), HostConfig.from_api(host), cpu_count=2,
                        bind_source_exists=lambda p: p == "/s", last=40)
    assert message in str(e.value)


def test_validate_create_accepts_and_cleans_workdir() -> None:
    config, warnings = validate_create(
        Config.from_api({"WorkingDir": "/a/../b/", "StopSignal": "usr1", "Env": ["A"]}),
        HostConfig.from_api(FULL_HOST | {"PidMode": "", "Mounts": FULL_HOST["Mounts"]}),
        cpu_count=2, bind_source_exists=lambda p: p == "/s", last=40)
    assert config.working_dir == "/b"
    assert warnings == []
    _, warnings = validate_create(Config(), HostConfig(oom_kill_disable=True), cpu_count=2)
    assert warnings and "OOM killer is disabled" in warnings[0]


def test_restart_policy_cli_form() -> None:
    assert RestartPolicy.parse("on-failure:3") == RestartPolicy("on-failure", 3)
    assert RestartPolicy.parse("unless-stopped") == RestartPolicy("unless-stopped", 0)
    with pytest.raises(InvalidArgument, match="maximum retry count can only be used"):
        RestartPolicy.parse("always:2")


@pytest.mark.parametrize(("opts", "expected"), [
    (["no-new-privileges"], (True, "")),
    (["no-new-privileges:false"], (False, "")),
    (["no-new-privileges=true", "seccomp=unconfined"], (True, "unconfined")),
    (["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"], (False, '{"defaultAction":'
                                                                 '"SCMP_ACT_ALLOW"}')),
    (["apparmor=docker-default", "label=disable", "label=type:x"], (False, "")),
])
def test_security_opt(opts: list[str], expected: tuple[bool, str]) -> None:
    parsed = parse_security_opt(opts)
    assert (parsed.no_new_privileges, parsed.seccomp_profile) == expected


@pytest.mark.parametrize(("opt", "message"), [
    ("bogus", 'invalid --security-opt 1: "bogus"'),
    ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
])
def test_security_opt_rejects(opt: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_security_opt([opt])
    assert str(e.value) == message


def test_capabilities_are_normalized_as_docker() -> None:
    assert normalize_capabilities(["net_admin", "CAP_SYS_ADMIN", "all"], last=40) == [
        "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "ALL"]
    with pytest.raises(InvalidArgument, match="not supported by your kernel"):
        normalize_capabilities(["CHECKPOINT_RESTORE"], last=39)


def test_tmpfs_options_as_docker_converts_them() -> None:
    assert tmpfs_mount_options(TmpfsOptions(3 << 30, 0o1777, (("noexec",),)), True) == [
        "ro", "mode=1777", "size=3g", "noexec"]
    assert tmpfs_mount_options(TmpfsOptions(3 << 10, 0, ()), False) == ["size=3k"]
    assert tmpfs_mount_options(TmpfsOptions(1000, 0, ()), False) == ["size=1000"]
    assert Mount(type="tmpfs", target="/x").to_api() == {"Type": "tmpfs", "Target": "/x"}
