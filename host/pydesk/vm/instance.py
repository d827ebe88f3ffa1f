"""The instance directory ``~/.pydesk/<name>/``: every file of a VM instance is named here, once.

What it is for: the CLI, the agent, the tests and the docs find an instance's files through
:class:`InstanceFiles` and nowhere else; :func:`ensure_keys` makes the per-instance SSH keys at
first start (the client key, and the guest's host key that the host pins before the guest boots).
What it must never do: start processes, or write a private key readable by anyone but the user.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydesk.vm.config import VmConfig, validate_name
from pydesk.vm.errors import NotFound

HOME_ENV = "PYDESK_HOME"


def pydesk_home() -> Path:
    """``$PYDESK_HOME``, else ``~/.pydesk``."""
    override = os.environ.get(HOME_ENV)
    return Path(override) if override else Path.home() / ".pydesk"


def accel_cache_file(home: Path | None = None) -> Path:
    """The accelerator probe's verdict, one per host (not per instance), valid for one boot."""
    return (home or pydesk_home()) / "accel-cache.json"


@dataclass(frozen=True)
class InstanceFiles:
    """The files of one instance; a property per file so none is spelled twice."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    # What the user asked for, and what the guest gets.
    @property
    def config(self) -> Path:
        return self.dir / "config.json"

    @property
    def guest_config(self) -> Path:
        """GuestConfig JSON, handed to the guest through fw_cfg (holds the guest host key: 0600)."""
        return self.dir / "guest-config.json"

    @property
    def data_disk(self) -> Path:
        return self.dir / "data.qcow2"

    # Keys (0600).
    @property
    def client_key(self) -> Path:
        """The private key the host logs in with (OpenSSH format)."""
        return self.dir / "ssh-client-key"

    @property
    def client_pubkey(self) -> Path:
        return self.dir / "ssh-client-key.pub"

    @property
    def host_key(self) -> Path:
        """The guest's SSH host private key, made here, given to the guest in guest-config.json."""
        return self.dir / "ssh-host-key"

    @property
    def known_host_pubkey(self) -> Path:
        """The guest host key's public half, pinned: the channel accepts no other key."""
        return self.dir / "ssh-host-key.pub"

    @property
    def launch(self) -> Path:
        """JSON written by ``start`` for the agent: the image directory, the accelerator's
        reason, the accelerator the user asked for (auto...)."""
        return self.dir / "launch.json"

    @property
    def stop_request(self) -> Path:
        """Created by ``stop``: the agent powers the VM off (portable; SIGTERM also works)."""
        return self.dir / "stop.request"

    # While running.
    @property
    def runtime(self) -> Path:
        """JSON written by the agent for one boot: ssh_port, accelerator, QEMU pid."""
        return self.dir / "runtime.json"

    @property
    def qmp_socket(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def ctl_socket(self) -> Path:
        """The guest's control port (virtio-serial, vmcontract.CTL_PORT_NAME) on the host."""
        return self.dir / "ctl.sock"

    # The saved VM state that later starts resume from (pydesk.vm.resume).
    @property
    def resume_state(self) -> Path:
        """QEMU's migration stream of the VM at the guest's snapshot point (0600)."""
        return self.dir / "resume.state"

    @property
    def resume_meta(self) -> Path:
        """JSON beside it: the key the state is valid for, its size, when it was saved."""
        return self.dir / "resume.json"

    @property
    def qemu_pid(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def agent_pid(self) -> Path:
        return self.dir / "agent.pid"

    # Logs and status.
    @property
    def console_log(self) -> Path:
        """The guest's serial console for the current (or last) boot."""
        return self.dir / "console.log"

    @property
    def previous_console_log(self) -> Path:
        """The console of the boot before: kept so a crash can be read after the next start."""
        return self.dir / "console.previous.log"

    @property
    def qemu_log(self) -> Path:
        """QEMU's own stdout/stderr (its warnings and errors, not the guest's console)."""
        return self.dir / "qemu.log"

    @property
    def agent_log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def status(self) -> Path:
        """The agent's status events, one JSON object per line (see pydesk.agent.status)."""
        return self.dir / "status.jsonl"

    @property
    def lock(self) -> Path:
        """Held while a start prepares the instance, so two starts do not race."""
        return self.dir / "start.lock"

    def exists(self) -> bool:
        return self.config.exists()


def instance_files(name: str, home: Path | None = None) -> InstanceFiles:
    return InstanceFiles((home or pydesk_home()) / validate_name(name))


def list_instances(home: Path | None = None) -> list[str]:
    root = home or pydesk_home()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").exists())


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Writes ``data`` to ``path``, with ``mode`` from the start (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_config(files: InstanceFiles, config: VmConfig) -> None:
    write_private(files.config, json.dumps(config.to_json(), indent=2).encode() + b"\n", 0o644)


def load_config(files: InstanceFiles) -> VmConfig:
    """The instance's saved configuration; raises NotFound when it was never started."""
    try:
        data = json.loads(files.config.read_text())
    except FileNotFoundError as e:
        raise NotFound(f"no VM named {files.name!r}", hint="start it: pydesk vm start") from e
    return VmConfig.from_json(data)


@dataclass(frozen=True)
class Keys:
    client_private: Path
    client_public_line: str
    host_private_text: str
    host_public_line: str


def ensure_keys(files: InstanceFiles) -> Keys:
    """The instance's keys, made on first call (ed25519, 0600), read afterwards."""
    files.dir.mkdir(parents=True, exist_ok=True)
    if not files.client_key.exists() or not files.client_pubkey.exists():
        private, public = new_ed25519_key(f"pydesk-{files.name}-client")
        write_private(files.client_key, private)
        write_private(files.client_pubkey, public + b"\n", 0o644)
    if not files.host_key.exists() or not files.known_host_pubkey.exists():
        private, public = new_ed25519_key(f"pydesk-{files.name}-host")
        write_private(files.host_key, private)
        write_private(files.known_host_pubkey, public + b"\n", 0o644)
    return Keys(client_private=files.client_key,
                client_public_line=files.client_pubkey.read_text().strip(),
                host_private_text=files.host_key.read_text(),
                host_public_line=files.known_host_pubkey.read_text().strip())


def new_ed25519_key(comment: str) -> tuple[bytes, bytes]:
    """A fresh ed25519 key: (private, OpenSSH format; public, ``ssh-ed25519 AAAA... comment``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return private, public + b" " + comment.encode()
