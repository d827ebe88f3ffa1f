"""The saved VM state: made once at the guest's snapshot point, resumed by later starts.

What it is for: under TCG most of a cold boot is the guest importing pydeskd. The guest init
stops at a snapshot point (``pydeskd.guestinit.snapshot``: root mounted, configuration read,
pydeskd imported; sshd not started, data disk never opened) and says so on the control port.
The first start of an instance saves the VM there (QMP ``stop``, ``migrate`` to a file,
``cont``), later starts launch QEMU with ``-incoming defer`` and load that file instead of
booting. Either way the agent then sends the go line (host clock, fresh entropy).

A saved state is valid only for the exact VM it came from, named by :func:`resume_key`: the
image (its image.json, which holds the files' digests), QEMU's argv minus what changes per launch
(the ssh forward port), QEMU's version and binary, the guest configuration, the data disk's
virtual size and the contract version. Anything else: the state is deleted and the start cold
boots (and saves a new one).

What it must never do: keep a state whose key does not match, leave a half-written state file
under the final name (written to a temporary name, then renamed), make the state readable by
others (guest memory holds the SSH host key), or decide on its own to give up the VM (the agent
falls back to a cold boot on any error raised here).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydesk.vm.errors import VmError
from pydesk.vm.instance import InstanceFiles, write_private
from pydesk.vm.qemu import INCOMING_ARGS
from pydesk.vm.qmp import Qmp
from pydeskd import vmcontract

SAVE_TIMEOUT = 120.0
LOAD_TIMEOUT = 60.0
STATE_FORMAT = 1
"""Bumped when the key's inputs change meaning: every older state is then cold-booted away."""
QCOW2_MAGIC = b"QFI\xfb"
SSH_PORT_PLACEHOLDER = "SSH_PORT"


class ResumeError(VmError):
    """Saving or loading the VM state failed; the agent cold boots instead."""


# --- the key ----------------------------------------------------------------------------------

def stable_argv(argv: list[str], ssh_port: int) -> list[str]:
    """``argv`` without what may differ between the launch that saved and the one that loads:
    the ssh forward port (slirp re-creates command-line forwards) and ``-incoming defer``."""
    out: list[str] = []
    skip = 0
    for i, arg in enumerate(argv):
        if skip:
            skip -= 1
            continue
        if tuple(argv[i:i + len(INCOMING_ARGS)]) == INCOMING_ARGS:
            skip = len(INCOMING_ARGS) - 1
            continue
        out.append(arg.replace(_forward(ssh_port), _forward(SSH_PORT_PLACEHOLDER)))
    return out


def _forward(port: int | str) -> str:
    return f"{vmcontract.HOST_FORWARD_ADDRESS}:{port}-:{vmcontract.GUEST_SSH_PORT}"


def qcow2_virtual_size(header: bytes) -> int:
    """The virtual size in a qcow2 header (bytes 24..32, big-endian). Raises ValueError."""
    if len(header) < 32 or header[:4] != QCOW2_MAGIC:
        raise ValueError("not a qcow2 image")
    return int(struct.unpack_from(">Q", header, 24)[0])


def resume_key(*, image_info: bytes, argv: list[str], ssh_port: int, qemu_identity: str,
               guest_config: bytes, disk_bytes: int) -> str:
    """The sha256 naming the one VM a saved state may be loaded into."""
    parts = {"format": STATE_FORMAT, "contract": vmcontract.CONTRACT_VERSION,
             "image": hashlib.sha256(image_info).hexdigest(),
             "argv": stable_argv(argv, ssh_port), "qemu": qemu_identity,
             "guest_config": hashlib.sha256(guest_config).hexdigest(), "disk_bytes": disk_bytes}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def qemu_identity(binary: str, version_text: str) -> str:
    """QEMU's ``--version`` first line plus its binary's size and mtime (a rebuilt QEMU of the
    same version may lay devices out differently)."""
    try:
        st = os.stat(binary)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "?"
    first = version_text.strip().splitlines()[0] if version_text.strip() else ""
    return f"{first} {binary} {stamp}"


def key_for_launch(files: InstanceFiles, image_dir: Path, argv: list[str], ssh_port: int,
                   version_text: str) -> str:
    """:func:`resume_key` from the files of this launch. Raises OSError, ValueError."""
    with files.data_disk.open("rb") as f:
        disk_bytes = qcow2_virtual_size(f.read(32))
    return resume_key(image_info=(image_dir / vmcontract.IMAGE_INFO_FILE).read_bytes(),
                      argv=argv, ssh_port=ssh_port,
                      qemu_identity=qemu_identity(argv[0], version_text),
                      guest_config=files.guest_config.read_bytes(), disk_bytes=disk_bytes)


# --- the saved state on disk ------------------------------------------------------------------

@dataclass(frozen=True)
class SavedState:
    key: str
    size: int
    saved_at: float
    save_seconds: float

    def to_json(self) -> dict[str, object]:
        return {"format": STATE_FORMAT, **self.__dict__}

    @classmethod
    def from_json(cls, data: object) -> SavedState:
        """Raises ValueError for anything but this format's record."""
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError("not a resume record of this format")
        try:
            return cls(str(data["key"]), int(data["size"]), float(data["saved_at"]),
                       float(data["save_seconds"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"resume record: {e}") from e


def check_saved(files: InstanceFiles, key: str) -> tuple[bool, str]:
    """(usable, why): whether the saved state matches ``key`` and looks whole."""
    if not files.resume_meta.exists() and not files.resume_state.exists():
        return False, "no saved VM state yet"
    try:
        saved = SavedState.from_json(json.loads(files.resume_meta.read_text()))
    except (OSError, ValueError) as e:
        return False, f"the saved VM state's record is unreadable ({e})"
    if saved.key != key:
        return False, "the saved VM state is for another image, QEMU or configuration"
    try:
        size = files.resume_state.stat().st_size
    except OSError:
        return False, "the saved VM state file is missing"
    if size != saved.size:
        return False, f"the saved VM state file is damaged ({size} bytes, {saved.size} expected)"
    return True, "saved VM state matches"


def discard(files: InstanceFiles) -> None:
    for path in (files.resume_meta, files.resume_state, _temp(files)):
        path.unlink(missing_ok=True)


def _temp(files: InstanceFiles) -> Path:
    return files.resume_state.with_name(files.resume_state.name + ".tmp")


# --- saving and loading through QMP -----------------------------------------------------------

def save(qmp: Qmp, files: InstanceFiles, key: str, *, timeout: float = SAVE_TIMEOUT) -> SavedState:
    """Stops the VM, writes its state, continues it. Raises ResumeError (the VM runs on)."""
    started = time.monotonic()
    temp = _temp(files)
    discard(files)
    try:
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # cat keeps 0600
        qmp.stop()
        try:
            qmp.migrate(f"exec:cat > {shlex.quote(str(temp))}")
            _wait_migration(qmp, timeout, lambda: True)
        finally:
            qmp.cont()  # whatever happened, the VM goes on
        saved = SavedState(key, temp.stat().st_size, time.time(),
                           round(time.monotonic() - started, 3))
        os.replace(temp, files.resume_state)
        write_private(files.resume_meta, json.dumps(saved.to_json()).encode())
        return saved
    except (VmError, OSError) as e:
        discard(files)
        raise ResumeError(f"saving the VM state failed: {e}") from e


def load(qmp: Qmp, files: InstanceFiles, alive: Callable[[], bool], *,
         timeout: float = LOAD_TIMEOUT) -> float:
    """Loads the saved state into a QEMU started with ``-incoming defer`` and runs it; returns
    the seconds it took. Raises ResumeError (QEMU must then be killed: it has no usable VM)."""
    started = time.monotonic()
    try:
        qmp.migrate_incoming(f"exec:cat {shlex.quote(str(files.resume_state))}")
        _wait_migration(qmp, timeout, alive)
        qmp.cont()  # the state was saved paused: it loads paused
    except VmError as e:
        raise ResumeError(f"loading the saved VM state failed: {e}") from e
    return time.monotonic() - started


def _wait_migration(qmp: Qmp, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise ResumeError("QEMU exited during the migration (see qemu.log)")
        info = qmp.query_migrate()
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise ResumeError(f"migration {status}: {info.get('error-desc', 'no reason given')}")
        if time.monotonic() > deadline:
            raise ResumeError(f"migration not done after {timeout:g}s (status {status})")
        time.sleep(0.05)


# --- the control port -------------------------------------------------------------------------

def go_line() -> bytes:
    """A fresh go line: the host's clock now, and new entropy."""
    return vmcontract.GoLine(time.time_ns(), os.urandom(vmcontract.GO_ENTROPY_BYTES)).encode()


class CtlPort:
    """The host end of the guest's control port (QEMU's unix-socket chardev, one client)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    def connect(cls, path: Path, timeout: float, alive: Callable[[], bool]) -> CtlPort:
        """Connects once QEMU made the socket. Raises ResumeError."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return cls(sock)
            except OSError as e:
                sock.close()
                if time.monotonic() > deadline or not alive():
                    raise ResumeError(f"control port {path}: {e}") from e
            time.sleep(0.02)

    def lines(self, timeout: float) -> list[str]:
        """Whole lines received within ``timeout``; [] when none. Raises ResumeError on EOF."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(4096)
        except (TimeoutError, BlockingIOError):  # a timeout of 0 makes the socket non-blocking
            return []
        except OSError as e:
            raise ResumeError(f"control port: {e}") from e
        if not chunk:
            raise ResumeError("control port closed by QEMU")
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        return [line.decode(errors="replace").strip() for line in complete]

    def send_go(self) -> None:
        """Raises ResumeError."""
        try:
            self.sock.sendall(go_line())
        except OSError as e:
            raise ResumeError(f"control port: {e}") from e

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
