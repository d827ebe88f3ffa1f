"""The host <-> guest contract: the guest module the host package imports.

Besides this module, the host imports only the sync protocol's portable modules
(``pydeskd.syncd.wire``, ``fspath`` and ``fstree``: standard library only, written for every host
OS), so the two ends of the sync speak and apply changes through one implementation.

What it is for: every name, path, device serial, fw_cfg key and media type that both sides of the
VM boundary must agree on, in one place. The host (``host/pydesk/vm``, the agent) builds the QEMU
command line and the guest configuration from it; the guest image (``vm-images/``, its init)
reads the same names. Change a value here and both sides follow.

What it must never do: import anything but the standard library's ``dataclasses``, or hold
logic beyond trivial derivations. It runs on macOS and Windows hosts too.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTRACT_VERSION = 2
"""Bumped when a change here makes old images and new hosts (or the reverse) disagree.
2: the control port and its snapshot-point handshake."""

# --- The guest image: three files, built by vm-images/, shipped as one OCI artifact -------------
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
ROOTFS_FILE = "rootfs.erofs"
IMAGE_INFO_FILE = "image.json"
"""JSON beside the three files: {"contract": N, "arch": ..., "recipe_hash": ..., "files": {name:
sha256}, "kernel_version": ..., "pydesk_version": ...}."""

ARTIFACT_TYPE = "application/vnd.pydesk.vm-image.v1+json"
"""The manifest's artifactType (and its config's mediaType) when the image is pushed as an OCI
artifact; each file is a layer with the media type below and the file name as
``org.opencontainers.image.title``."""
LAYER_MEDIA_TYPES = {
    KERNEL_FILE: "application/vnd.pydesk.vm.kernel",
    INITRD_FILE: "application/vnd.pydesk.vm.initrd",
    ROOTFS_FILE: "application/vnd.pydesk.vm.rootfs.erofs",
    IMAGE_INFO_FILE: "application/vnd.pydesk.vm.info+json",
}

# --- Disks: virtio-blk devices found in the guest by serial (/sys/block/vd*/serial) -------------
ROOT_DISK_SERIAL = "pydesk-root"
"""The read-only root image (erofs), attached read-only."""
DATA_DISK_SERIAL = "pydesk-data"
"""The qcow2 data disk (discard=unmap). The guest makes an ext4 filesystem on it when it has none
(first boot) and grows the filesystem to the disk at every boot."""
DATA_MOUNT = "/var/lib/pydesk"
"""Where the guest mounts the data disk: pydeskd's --data-root."""

# --- Kernel command line -------------------------------------------------------------------------
KERNEL_CMDLINE = ("console=ttyS0", "panic=-1", "quiet")
"""panic=-1: a guest that panics reboots at once, and QEMU runs with -no-reboot, so it exits."""

# --- Configuration the host gives the guest, read-only, through QEMU fw_cfg ---------------------
FW_CFG_CONFIG = "opt/pydesk/config"
"""A JSON object (GuestConfig.to_json): /sys/firmware/qemu_fw_cfg/by_name/opt/pydesk/config/raw in
the guest (module qemu_fw_cfg). Readable by root only in the guest."""


@dataclass(frozen=True)
class GuestConfig:
    """What the guest needs from the host at every boot."""

    instance: str
    """The instance name (``default``): the guest's hostname is ``pydesk-<instance>``."""
    authorized_key: str
    """The per-instance client public key, one OpenSSH line (``ssh-ed25519 AAAA...`` / ecdsa)."""
    ssh_host_key: str
    """The guest's SSH host private key (OpenSSH or PEM), made by the host at first start so the
    host can pin the public half before the guest ever boots."""
    daemon_json: str = "{}"
    """pydeskd's daemon.json (registry mirrors, insecure registries...), as text."""

    def to_json(self) -> dict[str, object]:
        return {"contract": CONTRACT_VERSION, "instance": self.instance,
                "authorized_key": self.authorized_key, "ssh_host_key": self.ssh_host_key,
                "daemon_json": self.daemon_json}


# --- Network: QEMU user-mode networking (no root on the host) ----------------------------------
GUEST_ADDRESS = "10.0.2.15/24"
GUEST_GATEWAY = "10.0.2.2"
GUEST_DNS = "10.0.2.3"
GUEST_SSH_PORT = 22
"""The guest's sshd. The host forwards one loopback port to it (hostfwd=tcp:127.0.0.1:P-:22) and
nothing else: the guest API is reachable only through the authenticated SSH channel."""
HOST_FORWARD_ADDRESS = "127.0.0.1"

# --- The guest daemon --------------------------------------------------------------------------
GUEST_API_SOCKET = "/run/pydesk/docker.sock"
"""pydeskd's socket in the guest; the host reaches it over SSH with a
``direct-streamlocal@openssh.com`` channel (OpenSSH: AllowStreamLocalForwarding)."""
GUEST_USER = "root"
GUEST_SERIAL_READY = "pydesk-guest: ready"
"""The line the guest init prints on the serial console once pydeskd answers /_ping inside the
guest (the host still checks /_ping itself through the channel before it says running)."""
GUEST_SERIAL_FAILED = "pydesk-guest: failed: "
"""Followed by the reason, when the guest init gives up on pydeskd (it exited before answering,
never answered, or died more often than the init restarts it): the host agent reports the
instance degraded at once instead of after its boot timeout."""
GUEST_SERIAL_POWEROFF = "pydesk-guest: powered off cleanly"
"""Printed after the data disk is synced and unmounted, just before the guest powers off."""


# --- The control port: a virtio-serial port, for the snapshot-point handshake ------------------
CTL_PORT_NAME = "org.pydesk.ctl"
"""The virtserialport's name (/sys/class/virtio-ports/vport*/name in the guest); on the host a
unix socket chardev in the instance directory."""
CTL_AT_SNAPSHOT_POINT = "at-snapshot-point"
"""Repeated by the guest init (one line a second) while it waits at the snapshot point: the root
is mounted, the configuration read, pydeskd imported; sshd not started, the data disk not
opened, nothing secret or random made yet. The host may save the VM's state there, then it must
send a go line; the guest waits for it as long as it takes."""
CTL_GO = "go"
GO_ENTROPY_BYTES = 32


@dataclass(frozen=True)
class GoLine:
    """``go <host unix time in ns> <entropy in hex>``: what must be fresh after a resume."""

    time_ns: int
    entropy: bytes

    def encode(self) -> bytes:
        return f"{CTL_GO} {self.time_ns} {self.entropy.hex()}\n".encode()

    @classmethod
    def parse(cls, line: bytes) -> GoLine | None:
        """The go line in ``line`` (one line, newline optional), else None."""
        fields = line.decode("ascii", errors="replace").split()
        if len(fields) != 3 or fields[0] != CTL_GO or not fields[1].isdigit():
            return None
        try:
            entropy = bytes.fromhex(fields[2])
        except ValueError:
            return None
        if len(entropy) < GO_ENTROPY_BYTES:
            return None
        return cls(int(fields[1]), entropy)
