"""Acceptance of issue 6 under QEMU TCG: pydesk vm start/status/ssh/stop, persistence of images
and volumes across a stop, QEMU killed -9, the accelerator fallback, nothing listening beyond
127.0.0.1 and no engine access without the key. Each test boots the real guest image."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from pydeskd import vmcontract
from tests.support.registry import Registry
from tests.vm.vmdriver import VmDriver

DISK = "4G"


def kernel_version(image: Path) -> str:
    return str(json.loads((image / vmcontract.IMAGE_INFO_FILE).read_text())["kernel_version"])


def test_start_ssh_stop_keeps_pulled_image_and_volume(vm: VmDriver, registry: Registry,
                                                      guest_image: Path) -> None:
    guest_registry = "10.0.2.2:" + registry.host.rsplit(":", 1)[1]
    daemon_json = json.dumps({"insecure-registries": [guest_registry]})
    started = vm.cli("vm", "start", "--disk-size", DISK, "--memory", "1G",
                     "--daemon-json", daemon_json)
    # KVM hangs or aborts here: auto falls back to TCG and says why
    assert re.search(r"accelerator: tcg \(TCG \(software emulation\): .*kvm", started.stderr,
                     re.S), started.stderr
    assert "is running" in started.stderr
    current = vm.status()
    assert current["state"] == "running" and current["accel"] == "tcg", current
    assert current["ssh_port"] > 0

    again = vm.cli("vm", "start")  # idempotent
    assert "already running" in again.stderr

    ref = f"{guest_registry}/test/single"
    with vm.channel() as chan:
        assert chan.http_get("/_ping") == (200, b"OK")
        status, body = chan.request("POST", f"/images/create?fromImage={ref}&tag=latest",
                                    b"", timeout=180)
        assert status == 200 and b'"error"' not in body, body[-500:]
        status, body = chan.request("POST", "/volumes/create", json.dumps({"Name": "keep"})
                                    .encode())
        assert status == 201, body
        mountpoint = json.loads(body)["Mountpoint"]
        wrote = chan.exec(f"echo kept > {mountpoint}/file && sync")
        assert wrote.status == 0, wrote.stderr

    uname = vm.cli("vm", "ssh", "--", "uname", "-a")
    assert kernel_version(guest_image) in uname.stdout
    assert "pydesk-default" in uname.stdout
    failing = vm.cli("vm", "ssh", "--", "sh", "-c", "exit 3", check=False)
    assert failing.returncode == 3

    stopped = vm.cli("vm", "stop")
    assert "the guest powered off cleanly" in stopped.stderr, stopped.stderr
    assert vm.status()["state"] == "stopped"
    assert vm.qemu() is None
    assert vmcontract.GUEST_SERIAL_POWEROFF in vm.files.console_log.read_text(errors="replace")

    vm.cli("vm", "start")
    with vm.channel() as chan:
        images = json.loads(chan.http_get("/images/json")[1])
        assert any(f"{ref}:latest" in (image.get("RepoTags") or []) for image in images), images
        assert chan.http_get("/volumes/keep")[0] == 200
        assert chan.exec(f"cat {mountpoint}/file").stdout == b"kept\n"
    vm.cli("vm", "stop")
    vm.cli("vm", "rm")
    assert not vm.files.dir.exists()


def test_kill9_is_reported_and_next_boot_has_an_intact_disk(vm: VmDriver) -> None:
    vm.cli("vm", "start", "--disk-size", DISK)
    qemu = vm.qemu()
    assert qemu is not None

    # Nothing the VM opened listens beyond loopback, and no listener gives engine access.
    bound = [c for c in qemu.net_connections(kind="inet")
             if c.status == psutil.CONN_LISTEN or (c.status == psutil.CONN_NONE and c.laddr)]
    assert bound, "QEMU should listen on the SSH forward"
    for conn in bound:
        assert conn.laddr.ip == "127.0.0.1", conn
    for conn in bound:
        if conn.status != psutil.CONN_LISTEN:
            continue
        with socket.create_connection(("127.0.0.1", conn.laddr.port), timeout=5) as raw:
            raw.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            raw.settimeout(3)
            try:
                answer = raw.recv(4096)
            except (TimeoutError, ConnectionResetError):
                answer = b""
        assert not answer.startswith(b"HTTP/"), answer  # sshd's banner or nothing
        assert answer.strip() != b"OK"

    with vm.channel() as chan:
        marker = chan.exec(f"echo before-kill > {vmcontract.DATA_MOUNT}/marker && sync")
        assert marker.status == 0
    qemu.kill()
    current = vm.wait_state("stopped", timeout=20)
    assert current["state"] == "stopped"
    assert "QEMU was killed (signal 9" in current["message"], current
    assert "signal 9" in current["error"]
    assert "killed (signal 9" in vm.cli("vm", "status").stdout

    vm.cli("vm", "start")
    console = vm.files.console_log.read_text(errors="replace")
    # e2fsck -p names the filesystem by its label (or device): the journal of the killed boot
    # is replayed and the check ends clean.
    assert re.search(r"(/dev/vd\w|pydesk-data): clean, ", console), console[-3000:]
    assert "is damaged" not in console and "running e2fsck -fy" not in console
    with vm.channel() as chan:
        assert chan.exec(f"cat {vmcontract.DATA_MOUNT}/marker").stdout == b"before-kill\n"
        errors = chan.exec("dmesg | grep -i 'EXT4-fs error' || true").stdout
        assert errors == b"", errors
    vm.cli("vm", "stop")


def test_stop_falls_back_to_quit_when_the_guest_is_too_slow(vm: VmDriver) -> None:
    vm.cli("vm", "start", "--disk-size", DISK)
    # No guest shuts down (stops pydeskd, syncs, unmounts) in 0.2 s under TCG: QMP quit.
    began = time.monotonic()
    stopped = vm.cli("vm", "stop", "--timeout", "0.2")
    assert time.monotonic() - began < 30
    assert "QEMU quit before the guest powered off" in stopped.stderr, stopped.stderr
    assert vm.qemu() is None
