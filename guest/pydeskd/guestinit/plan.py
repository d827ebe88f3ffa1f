"""The guest init's pure decisions: configuration, file contents, superblocks, events.

What it is for: everything the init decides without touching the system, so that it is tested
without a VM. What it must never do: perform I/O or import anything heavier than ``json``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from pydeskd import vmcontract
from pydeskd.guestinit import preload

CONFIG_PATH = "/sys/firmware/qemu_fw_cfg/by_name/" + vmcontract.FW_CFG_CONFIG + "/raw"
DAEMON_CONFIG_PATH = "/etc/pydesk/daemon.json"
SSH_HOST_KEY_PATH = "/etc/ssh/ssh_host_key"
AUTHORIZED_KEYS_PATH = "/etc/ssh/authorized_keys.d/" + vmcontract.GUEST_USER
PYDESK_BIN = "/opt/pydesk/bin"
PATH = preload.ENV["PATH"]
PYDESKD_LOG = preload.PYDESKD_LOG
SSHD_LOG = "/var/log/sshd.log"
CGROUP_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")

EXT4_MAGIC = 0xEF53
EXT4_SUPERBLOCK_OFFSET = 1024
EXT4_FEATURE_INCOMPAT_64BIT = 0x80
GROW_SLACK = 4 << 20
"""The data filesystem is grown only when the disk has at least this much more than it uses."""

EV_KEY = 1
KEY_POWER = 116
INPUT_EVENT = struct.Struct("llHHi")
"""struct input_event on 64-bit Linux: timeval (two longs), type, code, value."""

E2FSCK_OK = frozenset({0, 1, 2})
"""e2fsck -p: 0 clean, 1 errors corrected, 2 corrected and a reboot is advised (root fs only)."""


class ConfigError(ValueError):
    """The host's configuration could not be used."""


def parse_config(raw: bytes) -> vmcontract.GuestConfig:
    """The fw_cfg blob as a GuestConfig. Raises ConfigError (bad JSON, missing field, other
    contract version)."""
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"configuration is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ConfigError("configuration is not a JSON object")
    if obj.get("contract") != vmcontract.CONTRACT_VERSION:
        raise ConfigError(f"configuration is for contract {obj.get('contract')!r}, this image "
                          f"speaks contract {vmcontract.CONTRACT_VERSION}")
    fields = {}
    for name in ("instance", "authorized_key", "ssh_host_key", "daemon_json"):
        value = obj.get(name, "{}" if name == "daemon_json" else None)
        if not isinstance(value, str):
            raise ConfigError(f"configuration field {name!r} must be a string")
        fields[name] = value
    if not fields["instance"] or "/" in fields["instance"]:
        raise ConfigError(f"invalid instance name {fields['instance']!r}")
    try:
        if not isinstance(json.loads(fields["daemon_json"]), dict):
            raise ConfigError("daemon_json must be a JSON object")
    except ValueError as e:
        raise ConfigError(f"daemon_json is not JSON: {e}") from None
    return vmcontract.GuestConfig(**fields)


def hostname(config: vmcontract.GuestConfig) -> str:
    return f"pydesk-{config.instance}"[:63]


def hosts_file(name: str) -> str:
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n")


def resolv_conf() -> str:
    return f"nameserver {vmcontract.GUEST_DNS}\n"


def authorized_keys(config: vmcontract.GuestConfig) -> str:
    """One key line; options and newlines smuggled in the key are refused by construction."""
    line = config.authorized_key.strip()
    if "\n" in line or not line.startswith(("ssh-", "ecdsa-", "sk-")):
        raise ConfigError("authorized_key must be one OpenSSH public key line")
    return line + "\n"


def host_key(config: vmcontract.GuestConfig) -> str:
    key = config.ssh_host_key.strip()
    if "PRIVATE KEY-----" not in key:
        raise ConfigError("ssh_host_key must be a PEM or OpenSSH private key")
    return key + "\n"


def network_batch() -> str:
    """``ip -batch -`` input: loopback, the guest address, the default route."""
    return (f"link set lo up\naddr add {vmcontract.GUEST_ADDRESS} dev eth0\n"
            f"link set eth0 up\nroute add default via {vmcontract.GUEST_GATEWAY} dev eth0\n")


@dataclass(frozen=True)
class Ext4Superblock:
    block_size: int
    blocks: int

    @property
    def size(self) -> int:
        return self.block_size * self.blocks


def read_ext4_superblock(head: bytes) -> Ext4Superblock | None:
    """The ext2/3/4 superblock in the first 2 KiB of a disk, or None (no filesystem there)."""
    sb = head[EXT4_SUPERBLOCK_OFFSET:EXT4_SUPERBLOCK_OFFSET + 1024]
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 56)[0] != EXT4_MAGIC:
        return None
    blocks_lo, = struct.unpack_from("<I", sb, 4)
    log_block, = struct.unpack_from("<I", sb, 24)
    incompat, = struct.unpack_from("<I", sb, 96)
    blocks_hi = struct.unpack_from("<I", sb, 0x150)[0] if incompat & EXT4_FEATURE_INCOMPAT_64BIT \
        else 0
    return Ext4Superblock(1024 << log_block, blocks_lo | blocks_hi << 32)


def needs_grow(sb: Ext4Superblock, device_bytes: int) -> bool:
    return device_bytes - sb.size >= max(GROW_SLACK, sb.block_size)


def mkfs_argv(device: str) -> list[str]:
    # Lazy init: the inode tables and journal are zeroed by the kernel after mount, not by mkfs
    # (seconds under TCG on a big disk); nodiscard: a new qcow2 is already all holes.
    return ["mkfs.ext4", "-q", "-F", "-L", "pydesk-data", "-m", "0",
            "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", device]


def fsck_argv(device: str) -> list[str]:
    return ["e2fsck", "-p", device]


def pydeskd_argv() -> list[str]:
    return [PYDESK_BIN + "/pydeskd", "-H", "unix://" + vmcontract.GUEST_API_SOCKET,
            "--data-root", vmcontract.DATA_MOUNT, "--config-file", DAEMON_CONFIG_PATH]


def sshd_argv() -> list[str]:
    return ["/usr/sbin/sshd", "-D", "-e"]


def child_env() -> dict[str, str]:
    return dict(preload.ENV)


def is_power_key_press(data: bytes) -> bool:
    """Whether a read from an input device holds a KEY_POWER press."""
    size = INPUT_EVENT.size
    for offset in range(0, len(data) - size + 1, size):
        _, _, kind, code, value = INPUT_EVENT.unpack_from(data, offset)
        if kind == EV_KEY and code == KEY_POWER and value == 1:
            return True
    return False


def ping_ok(reply: bytes) -> bool:
    """Whether an HTTP reply to GET /_ping is pydeskd saying OK."""
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[1] == b"200" and body.strip() == b"OK"


def mounts_under(mountinfo: str, top: str) -> list[str]:
    """Mount points at or below ``top`` in /proc/self/mountinfo, deepest first (unmount order)."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if point == top or point.startswith(top.rstrip("/") + "/"):
            found.append(point)
    # Deepest path first; at one path, later mounts stack on earlier ones: the latest first (a
    # path mounted twice is unmounted twice).
    order = sorted(range(len(found)), key=lambda i: (-found[i].count("/"), -i))
    return [found[i] for i in order]


def find_disk(serials: dict[str, str], serial: str) -> str | None:
    """The /dev path of the virtio disk with this serial ({"vda": serial, ...})."""
    for name in sorted(serials):
        if serials[name].strip() == serial:
            return "/dev/" + name
    return None
