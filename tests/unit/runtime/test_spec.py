"""parse_spec: typed data from config.json, and a clear error naming the field for bad input."""

from __future__ import annotations

from typing import Any

import pytest

from pydeskd.runtime.errors import SpecError
from pydeskd.runtime.spec import DeviceRule, Namespace, parse_spec
from tests.support.busybox import base_config


def test_base_config_parses_to_typed_data() -> None:
    spec = parse_spec(base_config(["echo", "hi"], cgroups_path="/pydesk/x"))
    assert spec.root.path == "rootfs"
    assert spec.process is not None
    assert spec.process.args == ("echo", "hi")
    assert spec.process.no_new_privileges
    assert spec.process.capabilities is not None
    assert "CAP_KILL" in spec.process.capabilities.bounding
    assert spec.process.rlimits[0].type == "RLIMIT_NOFILE"
    assert spec.linux.namespace("pid") == Namespace("pid")
    assert spec.linux.namespace("cgroup") is None
    assert spec.linux.cgroups_path == "/pydesk/x"
    assert spec.linux.resources.devices == (DeviceRule(allow=False, type="a", access="rwm"),)
    assert [m.destination for m in spec.mounts][:2] == ["/proc", "/dev"]
    assert "/proc/kcore" in spec.linux.masked_paths


def test_resources_hooks_and_seccomp() -> None:
    config = base_config()
    config["linux"]["resources"].update(
        memory={"limit": 1 << 25}, cpu={"shares": 512, "quota": 50000, "period": 100000},
        pids={"limit": 8})
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 1, "value": 7, "op": "SCMP_CMP_EQ"}]}]}
    config["hooks"] = {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    spec = parse_spec(config)
    assert spec.linux.resources.memory.limit == 1 << 25
    assert spec.linux.resources.cpu.shares == 512
    assert spec.linux.resources.pids_limit == 8
    assert spec.linux.seccomp is not None
    assert spec.linux.seccomp.syscalls[0].args[0].value == 7
    assert spec.hooks.prestart[0].timeout == 5


def _with(path: str, value: Any) -> dict[str, Any]:
    config = base_config()
    *parents, last = path.split(".")
    node: Any = config
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return config


@pytest.mark.parametrize(("path", "value", "message"), [
    ("ociVersion", "2.0.0", "ociVersion"),
    ("root", None, "root: required"),
    ("process.args", [], "process.args"),
    ("process.args", "sh", "process.args: expected a list of strings"),
    ("process.cwd", "tmp", "process.cwd: 'tmp' is not an absolute path"),
    ("process.env", ["NOEQUALS"], "process.env[0]"),
    ("process.user", {"uid": "0"}, "process.user.uid: expected an integer"),
    ("process.terminal", "yes", "process.terminal: expected true or false"),
    ("process.rlimits", [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}], "unknown rlimit"),
    ("process.capabilities", {"bounding": ["KILL"]}, "not a capability name"),
    ("mounts.0.destination", "proc", "mounts[0].destination: 'proc' is not an absolute path"),
    ("linux.namespaces", [{"type": "bogus"}], "linux.namespaces[0].type: unknown namespace type"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "pid"}], "listed twice"),
    ("linux.namespaces", [{"type": "user"}], "not supported yet"),
    ("linux.namespaces", [{"type": "network", "path": "netns/x"}], "not an absolute path"),
    ("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}], "user namespaces"),
    ("linux.rootfsPropagation", "sideways", "unknown propagation"),
    ("linux.maskedPaths", ["proc/kcore"], "linux.maskedPaths[0]"),
    ("linux.devices", [{"type": "x", "path": "/dev/x"}], "unknown device type"),
    ("linux.resources.devices", [{"allow": True, "access": "rwx"}], "combination of r, w, m"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_NOPE"}, "unknown seccomp action"),
    ("hooks", {"prestart": [{"path": "bin/true"}]}, "hooks.prestart[0].path"),
    ("hooks", {"poststop": [{"path": "/bin/true", "timeout": 0}]}, "greater than zero"),
])
def test_bad_input_names_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(_with(path, value))


def test_not_an_object() -> None:
    with pytest.raises(SpecError, match="config: expected an object, got a list"):
        parse_spec([])
