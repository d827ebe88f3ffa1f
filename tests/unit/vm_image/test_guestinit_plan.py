"""The guest init's pure decisions."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pydeskd import vmcontract
from pydeskd.guestinit import plan

HOST_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
CLIENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB client"


def config_bytes(**changes: object) -> bytes:
    obj = vmcontract.GuestConfig("default", CLIENT_KEY, HOST_KEY,
                                 '{"insecure-registries": ["10.0.2.2:5000"]}').to_json()
    obj.update(changes)
    return json.dumps(obj).encode()


def test_config_round_trips_from_the_contract() -> None:
    config = plan.parse_config(config_bytes())
    assert config.instance == "default"
    assert plan.hostname(config) == "pydesk-default"
    assert plan.authorized_keys(config) == CLIENT_KEY + "\n"
    assert plan.host_key(config).startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert json.loads(config.daemon_json) == {"insecure-registries": ["10.0.2.2:5000"]}


@pytest.mark.parametrize(("raw", "message"), [
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (config_bytes(contract=99), "contract 99"),
    (config_bytes(instance=""), "invalid instance"),
    (config_bytes(instance="a/b"), "invalid instance"),
    (config_bytes(authorized_key=None), "'authorized_key' must be a string"),
    (config_bytes(daemon_json="[1]"), "daemon_json must be a JSON object"),
    (config_bytes(daemon_json="{"), "daemon_json is not JSON"),
])
def test_bad_config_is_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(plan.ConfigError, match=message):
        plan.parse_config(raw)


def test_key_material_is_checked() -> None:
    smuggled = plan.parse_config(config_bytes(authorized_key=CLIENT_KEY + "\nssh-rsa EVIL"))
    with pytest.raises(plan.ConfigError, match="one OpenSSH public key line"):
        plan.authorized_keys(smuggled)
    with pytest.raises(plan.ConfigError, match="one OpenSSH public key line"):
        plan.authorized_keys(plan.parse_config(config_bytes(
            authorized_key='command="sh" ' + CLIENT_KEY)))
    with pytest.raises(plan.ConfigError, match="private key"):
        plan.host_key(plan.parse_config(config_bytes(ssh_host_key="ssh-ed25519 AAAA")))


def test_network_files_follow_the_contract() -> None:
    batch = plan.network_batch()
    assert f"addr add {vmcontract.GUEST_ADDRESS} dev eth0" in batch
    assert f"route add default via {vmcontract.GUEST_GATEWAY}" in batch
    assert plan.resolv_conf() == f"nameserver {vmcontract.GUEST_DNS}\n"
    assert "127.0.1.1\tpydesk-x\n" in plan.hosts_file("pydesk-x")


def test_pydeskd_runs_on_the_contract_socket_and_data_mount() -> None:
    argv = plan.pydeskd_argv()
    assert argv[argv.index("-H") + 1] == "unix://" + vmcontract.GUEST_API_SOCKET
    assert argv[argv.index("--data-root") + 1] == vmcontract.DATA_MOUNT


def _mkfs(tmp_path: Path, size_mib: int) -> Path:
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run([mkfs, *plan.mkfs_argv(str(disk))[1:]], check=True, capture_output=True)
    return disk


def test_superblock_of_a_real_ext4_and_the_grow_decision(tmp_path: Path) -> None:
    disk = _mkfs(tmp_path, 64)
    sb = plan.read_ext4_superblock(disk.read_bytes()[:4096])
    assert sb is not None
    assert sb.size == 64 << 20
    assert not plan.needs_grow(sb, 64 << 20)
    assert plan.needs_grow(sb, 128 << 20)
    assert not plan.needs_grow(sb, (64 << 20) + 4096)


def test_no_superblock_on_an_empty_disk() -> None:
    assert plan.read_ext4_superblock(bytes(4096)) is None
    assert plan.read_ext4_superblock(b"short") is None


def test_power_key_press_is_found_among_events() -> None:
    ev = plan.INPUT_EVENT
    release = ev.pack(0, 0, plan.EV_KEY, plan.KEY_POWER, 0)
    sync = ev.pack(0, 0, 0, 0, 0)
    press = ev.pack(1, 2, plan.EV_KEY, plan.KEY_POWER, 1)
    other = ev.pack(1, 2, plan.EV_KEY, 30, 1)
    assert plan.is_power_key_press(sync + press + sync + release)
    assert not plan.is_power_key_press(release + sync + other)
    assert not plan.is_power_key_press(press[:-1])


def test_ping_reply() -> None:
    assert plan.ping_ok(b"HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\n\r\nOK")
    assert not plan.ping_ok(b"HTTP/1.1 500 Internal Server Error\r\n\r\nOK")
    assert not plan.ping_ok(b"")


MOUNTINFO = """\
22 1 254:0 / / ro - erofs /dev/vda ro
30 22 254:16 / /var/lib/pydesk rw - ext4 /dev/vdb rw,discard
31 30 0:40 / /var/lib/pydesk/overlay/1/merged rw - overlay overlay rw
32 30 0:41 / /var/lib/pydesk/volumes/with\\040space rw - tmpfs tmpfs rw
33 22 0:42 / /var/lib/pydesk-other rw - tmpfs tmpfs rw
34 30 0:43 / /var/lib/pydesk rw - tmpfs tmpfs rw
"""


def test_mounts_under_the_data_mount_deepest_and_latest_first() -> None:
    assert plan.mounts_under(MOUNTINFO, "/var/lib/pydesk") == [
        "/var/lib/pydesk/overlay/1/merged", "/var/lib/pydesk/volumes/with space",
        "/var/lib/pydesk", "/var/lib/pydesk"]


def test_find_disk_by_serial() -> None:
    serials = {"vda": "pydesk-root\n", "vdb": "pydesk-data"}
    assert plan.find_disk(serials, vmcontract.DATA_DISK_SERIAL) == "/dev/vdb"
    assert plan.find_disk(serials, "nope") is None
