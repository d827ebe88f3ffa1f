"""Default devices and cgroup rules (runc's), namespace flags and the init's sync channel."""

from __future__ import annotations

import os

from pydeskd.runtime import devices
from pydeskd.runtime import syscalls as sc
from pydeskd.runtime.init import Channel, unshare_flags
from pydeskd.runtime.spec import DeviceRule, parse_spec
from tests.support.busybox import base_config


def test_rules_are_spec_rules_then_runc_defaults() -> None:
    spec = parse_spec(base_config())
    rules = devices.cgroup_rules(spec)
    assert rules[0] == DeviceRule(allow=False, type="a", access="rwm")
    assert DeviceRule(True, "c", 1, 3, "rwm") in rules[1:]
    assert DeviceRule(True, "c", 136, None, "rwm") in rules[1:]


def test_default_devices_unless_dev_is_bound() -> None:
    config = base_config()
    config["linux"]["devices"] = [{"type": "c", "path": "/dev/null", "major": 1, "minor": 3,
                                   "fileMode": 0o600}, {"type": "c", "path": "/dev/fuse",
                                                        "major": 10, "minor": 229}]
    made = devices.devices_to_create(parse_spec(config))
    paths = [d.path for d in made]
    assert paths.count("/dev/null") == 1 and "/dev/fuse" in paths and "/dev/tty" in paths
    assert next(d for d in made if d.path == "/dev/null").file_mode == 0o600
    config["mounts"].append({"destination": "/dev", "type": "bind", "source": "/dev",
                             "options": ["rbind"]})
    assert [d.path for d in devices.devices_to_create(parse_spec(config))] == [
        "/dev/null", "/dev/fuse"]


def test_unshare_flags_skip_namespaces_with_a_path() -> None:
    config = base_config()
    config["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"},
                                     {"type": "network", "path": "/proc/1/ns/net"}]
    assert unshare_flags(parse_spec(config)) == sc.CLONE_NEWPID | sc.CLONE_NEWNS


def test_channel_round_trip_and_eof() -> None:
    a_read, b_write = os.pipe()
    b_read, a_write = os.pipe()
    a, b = Channel(a_read, a_write), Channel(b_read, b_write)
    b.send({"type": "pid", "pid": 42})
    b.send({"type": "ready"})
    assert a.recv() == {"type": "pid", "pid": 42}
    assert a.recv() == {"type": "ready"}
    a.send({"type": "resume"})
    assert b.recv() == {"type": "resume"}
    b.close()
    assert a.recv() is None
    a.close()
