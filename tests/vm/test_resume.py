"""The saved VM state under QEMU TCG: the first start saves it at the guest's snapshot point,
later starts resume from it (fresh clock and randomness, data intact), a damaged state cold
boots, and an agent killed with -9 leaves the VM running for the next start to adopt."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from pydesk.vm.channel import GuestChannel
from tests.support.registry import Registry
from tests.vm.vmdriver import VmDriver

DISK = "4G"
RANDOM = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"


def runtime(vm: VmDriver) -> dict[str, object]:
    return dict(json.loads(vm.files.runtime.read_text()))


def running_messages(vm: VmDriver) -> str:
    """Every "running" status message so far (the agent may report more than one per start:
    the desktop services add theirs after the guest API's)."""
    events = [json.loads(line) for line in vm.files.status.read_text().splitlines() if line]
    return "\n".join(e["message"] for e in events if e["state"] == "running")


def guest_clock_offset(chan: GuestChannel) -> float:
    before = time.time()
    guest = float(chan.exec("date +%s.%N").stdout)
    after = time.time()
    return guest - (before + after) / 2


def test_save_resume_fresh_clock_and_randomness_damaged_state_and_adopt(
        vm: VmDriver, registry: Registry) -> None:
    guest_registry = "10.0.2.2:" + registry.host.rsplit(":", 1)[1]
    daemon_json = json.dumps({"insecure-registries": [guest_registry]})
    first = vm.cli("vm", "start", "--disk-size", DISK, "--memory", "1G",
                   "--daemon-json", daemon_json)
    assert "saved the VM state at the guest's snapshot point" in first.stderr, vm.diagnostics()
    assert runtime(vm)["start_mode"] == "cold"
    assert vm.files.resume_state.stat().st_mode & 0o777 == 0o600
    ref = f"{guest_registry}/test/single"
    with vm.channel() as chan:
        status, body = chan.request("POST", f"/images/create?fromImage={ref}&tag=latest", b"",
                                    timeout=180)
        assert status == 200 and b'"error"' not in body, body[-500:]
        status, body = chan.request("POST", "/volumes/create",
                                    json.dumps({"Name": "keep"}).encode())
        assert status == 201, body
        mountpoint = json.loads(body)["Mountpoint"]
        assert chan.exec(f"echo kept > {mountpoint}/file && sync").status == 0
    vm.cli("vm", "stop")

    # Second start: resumed. Data written after the snapshot point is there (the snapshot holds
    # no cached block of the data disk), the clock is the host's, and the console shows the
    # guest went on from the snapshot point rather than booting.
    time.sleep(3)  # the saved guest clock is now at least 3 s behind
    resumed = vm.cli("vm", "start")
    assert "resumed the saved VM state" in resumed.stderr, resumed.stderr
    assert runtime(vm)["start_mode"] == "resumed"
    assert "resumed from the saved state; guest API ready" in running_messages(vm)
    assert vm.status()["start_mode"] == "resumed"
    console = vm.files.console_log.read_text(errors="replace")
    assert "go from the host" in console and "pydesk-initramfs" not in console, console
    with vm.channel() as chan:
        assert chan.http_get("/_ping") == (200, b"OK")
        images = json.loads(chan.http_get("/images/json")[1])
        assert any(f"{ref}:latest" in (i.get("RepoTags") or []) for i in images), images
        assert chan.exec(f"cat {mountpoint}/file").stdout == b"kept\n"
        assert abs(guest_clock_offset(chan)) < 2.0
        random_one = chan.exec(RANDOM).stdout
    vm.cli("vm", "stop")

    resumed = vm.cli("vm", "start")
    assert "resumed the saved VM state" in resumed.stderr
    with vm.channel() as chan:
        random_two = chan.exec(RANDOM).stdout
        assert len(random_one) == 64 and random_one != random_two  # the generator was reseeded
    vm.cli("vm", "stop")

    # A damaged state (same size, garbage): the load fails, the start says so and cold boots,
    # and saves a new state.
    size = vm.files.resume_state.stat().st_size
    with vm.files.resume_state.open("r+b") as f:
        f.write(os.urandom(min(size, 1 << 20)))
    damaged = vm.cli("vm", "start")
    assert "resuming the saved VM state failed: discarded, cold boot" in damaged.stderr, \
        damaged.stderr
    assert "saved the VM state at the guest's snapshot point" in damaged.stderr
    assert runtime(vm)["start_mode"] == "cold"

    # Kill the agent with -9: QEMU and the containers keep running; start adopts; stop works.
    with vm.channel() as chan:
        status, body = chan.request("POST", "/containers/create", json.dumps(
            {"Image": f"{ref}:latest", "Cmd": ["sleep", "1000"]}).encode())
        assert status == 201, body
        cid = json.loads(body)["Id"]
        assert chan.request("POST", f"/containers/{cid}/start", b"")[0] == 204
    agent_pid = int(vm.files.agent_pid.read_text())
    qemu = vm.qemu()
    assert qemu is not None
    agent = psutil.Process(agent_pid)
    agent.kill()
    agent.wait(10)
    assert qemu.is_running()
    current = vm.status()
    assert current["state"] == "degraded" and "without its agent" in current["message"], current
    adopted = vm.cli("vm", "start")
    assert "adopting it" in adopted.stderr, adopted.stderr
    current = vm.status()
    assert current["state"] == "running" and current["start_mode"] == "adopted", current
    assert f"adopted a running VM (pid {qemu.pid})" in running_messages(vm), current
    assert vm.qemu().pid == qemu.pid
    with vm.channel() as chan:
        state = json.loads(chan.http_get(f"/containers/{cid}/json")[1])["State"]
        assert state["Running"], state
    stopped = vm.cli("vm", "stop")
    assert "the guest powered off cleanly" in stopped.stderr, stopped.stderr
    assert vm.qemu() is None and not qemu.is_running()


def test_a_stale_state_cold_boots_and_the_state_goes_with_the_instance(vm: VmDriver) -> None:
    vm.cli("vm", "start", "--disk-size", DISK)
    assert vm.files.resume_state.exists() and vm.files.resume_meta.exists()
    key = json.loads(vm.files.resume_meta.read_text())["key"]
    vm.cli("vm", "stop")
    # Another memory size: the saved state is not for this VM any more.
    changed = vm.cli("vm", "start", "--memory", "1536M")
    assert ("the saved VM state is for another image, QEMU or configuration: cold boot"
            in changed.stderr), changed.stderr
    assert runtime(vm)["start_mode"] == "cold"
    assert json.loads(vm.files.resume_meta.read_text())["key"] != key  # saved anew
    vm.cli("vm", "stop")
    vm.cli("vm", "rm")
    assert not Path(vm.files.dir).exists()
