"""A container's life through a shim: create, start, exit, delete, and what each leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pydeskd.shim.client import ShimClient, ShimStartError, shim_command, start_shim
from pydeskd.shim.protocol import ErrorKind, EventType, ShimError, Status
from tests.integration.shim.conftest import ShimEnv, leftover_cgroups, pid_alive, read_log


def _shim_pid(client: ShimClient) -> int:
    return int(json.loads((client.path.parent / "shim.json").read_text())["pid"])


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_create_start_exit_delete(env: ShimEnv) -> None:
    script = "for i in 1 2 3; do echo out $i; echo err $i >&2; done; printf tail; exit 3"
    cid, client = env.start(["sh", "-c", script])
    state_dir = client.path.parent
    created = client.state()
    assert created.status is Status.CREATED and created.pid > 0
    assert pid_alive(created.pid)
    shim_pid = _shim_pid(client)
    # Its own session (the intermediate's, which exited: double fork), not our child.
    assert os.getsid(shim_pid) != os.getsid(0)
    assert _ppid(shim_pid) != os.getpid()
    assert (state_dir / "shim.sock").stat().st_mode & 0o777 == 0o600

    started = client.start()
    assert started.status is Status.RUNNING
    exited = client.wait(timeout=20)
    assert exited.status is Status.STOPPED and exited.exit_code == 3
    assert exited.exited_at and exited.exited_at.endswith("Z")

    # Recorded on disk for a daemon that was down.
    record = json.loads((state_dir / "exit.json").read_text())
    assert record["exit_code"] == 3 and record["exited_at"] == exited.exited_at

    entries = read_log(state_dir / "container.log")
    out = [e["log"] for e in entries if e["stream"] == "stdout"]
    err = [e["log"] for e in entries if e["stream"] == "stderr"]
    assert out == ["out 1\n", "out 2\n", "out 3\n", "tail"]  # unterminated rest: partial
    assert err == ["err 1\n", "err 2\n", "err 3\n"]

    kinds = [e.type for e in client.events()]
    assert kinds == [EventType.CREATE, EventType.START, EventType.EXIT]

    deleted = client.delete()
    assert deleted.status is Status.DELETED
    assert not state_dir.exists()
    for _ in range(50):
        if not pid_alive(shim_pid):
            break
        time.sleep(0.1)
    assert not pid_alive(shim_pid)
    listed = subprocess.run([str(env.runtime), "--root", str(env.root), "list", "-q"],
                            capture_output=True, text=True, check=False).stdout.split()
    assert cid not in listed
    assert leftover_cgroups(f"{env.cgroup_parent}/{cid}") == []


def test_illegal_steps_are_conflicts(env: ShimEnv) -> None:
    _, client = env.start(["sleep", "30"])
    with pytest.raises(ShimError) as err:
        client.exec("e1", env.exec_process(["true"]))  # exec needs a running container
    assert err.value.kind is ErrorKind.CONFLICT
    client.start()
    with pytest.raises(ShimError) as err:
        client.start()
    assert err.value.kind is ErrorKind.CONFLICT
    with pytest.raises(ShimError) as err:
        client.delete()
    assert err.value.kind is ErrorKind.CONFLICT
    with pytest.raises(ShimError) as err:
        client.state("no-such-exec")
    assert err.value.kind is ErrorKind.NOT_FOUND
    client.kill(signal.SIGKILL)
    assert client.wait(timeout=20).exit_code == 128 + signal.SIGKILL
    with pytest.raises(ShimError) as err:
        client.kill(signal.SIGKILL)
    assert err.value.kind is ErrorKind.CONFLICT
    client.delete()


def test_delete_created_container(env: ShimEnv) -> None:
    _, client = env.start(["sleep", "30"])
    pid = client.state().pid
    state_dir = client.path.parent
    client.delete()
    assert not state_dir.exists()
    for _ in range(50):
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    assert not pid_alive(pid)


def test_start_failure_leaves_nothing(env: ShimEnv) -> None:
    cid = env.new_id()
    bundle = env.bundle(cid, ["true"])
    (bundle / "config.json").write_text(
        (bundle / "config.json").read_text().replace(str(env.rootfs), str(env.base / "nope")))
    state_dir = env.state_dir(cid)
    with pytest.raises(ShimStartError) as err:
        start_shim(cid, bundle, state_dir, runtime=env.runtime, runtime_root=env.root)
    assert str(env.base / "nope") in str(err.value)  # the runtime's own message
    assert not state_dir.exists()
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                         check=True).stdout
    assert str(state_dir) not in out
    assert leftover_cgroups(f"{env.cgroup_parent}/{cid}") == []


def test_cli_usage_errors(env: ShimEnv) -> None:
    done = subprocess.run([*shim_command(), "start", "--id", "x", "--bundle",
                           str(env.base / "missing"), "--state-dir", str(env.base / "s-x")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "config.json" in done.stderr
    assert not (env.base / "s-x").exists()


def test_log_rotation(env: ShimEnv) -> None:
    script = "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); done"
    _, client = env.start(["sh", "-c", script], log_max_size=4096, log_max_files=3)
    client.start()
    assert client.wait(timeout=20).exit_code == 0
    log = client.path.parent / "container.log"
    files = [log.with_name("container.log.2"), log.with_name("container.log.1"), log]
    assert all(f.exists() for f in files)
    assert not log.with_name("container.log.3").exists()
    lines = [e["log"] for f in files for e in read_log(f)]
    # The oldest lines were rotated away; what is kept is the contiguous end, in order.
    assert lines == [f"line {i}\n" for i in range(400 - len(lines), 400)]
    assert all(f.stat().st_size < 4096 + 200 for f in files)


def test_exit_while_nobody_listens_is_found_later(env: ShimEnv) -> None:
    """A daemon that was down finds the shim from the state dir and learns how it ended."""
    cid, client = env.start(["sh", "-c", "echo bye; exit 4"])
    client.start()
    del client  # the "daemon" goes away; the container exits meanwhile
    state_dir = env.base / "s" / cid
    deadline = time.monotonic() + 20
    while not (state_dir / "exit.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    record = json.loads((state_dir / "exit.json").read_text())
    assert record["exit_code"] == 4
    found = ShimClient.for_state_dir(state_dir)
    state = found.state()
    assert state.status is Status.STOPPED and state.exit_code == 4
    assert state.exited_at == record["exited_at"]
    assert found.wait(timeout=5).exit_code == 4  # wait after the fact returns at once
    assert [e["log"] for e in read_log(state_dir / "container.log")] == ["bye\n"]
    found.delete()
    assert not state_dir.exists()


def test_failed_start_keeps_what_was_in_an_existing_state_dir(env: ShimEnv) -> None:
    cid = env.new_id()
    bundle = env.bundle(cid, ["true"])
    (bundle / "config.json").write_text(
        (bundle / "config.json").read_text().replace(str(env.rootfs), str(env.base / "nope")))
    state_dir = env.state_dir(cid)
    state_dir.mkdir(parents=True)
    (state_dir / "daemon-owned.json").write_text("{}")
    with pytest.raises(ShimStartError):
        start_shim(cid, bundle, state_dir, runtime=env.runtime, runtime_root=env.root)
    assert sorted(p.name for p in state_dir.iterdir()) == ["daemon-owned.json"]


def test_a_second_shim_for_the_same_state_dir_is_refused(env: ShimEnv) -> None:
    cid, client = env.start(["sleep", "30"])
    done = subprocess.run([*shim_command(), "start", "--id", cid + "x", "--bundle",
                           str(env.base / "b" / cid), "--state-dir", str(client.path.parent)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "already serves" in done.stderr
    assert client.state().status is Status.CREATED  # the first one is untouched


def test_a_duplicate_id_fails_without_touching_the_existing_container(env: ShimEnv) -> None:
    cid, first = env.start(["sleep", "30"])
    first.start()
    state_dir = env.state_dir(cid + "-dup")
    with pytest.raises(ShimStartError):
        start_shim(cid, env.base / "b" / cid, state_dir, runtime=env.runtime,
                   runtime_root=env.root)
    assert not state_dir.exists()
    state = first.state()
    assert state.status is Status.RUNNING and pid_alive(state.pid)


def test_kill_all(env: ShimEnv) -> None:
    _, client = env.start(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    client.start()
    client.kill(signal.SIGKILL, all=True)
    assert client.wait(timeout=20).exit_code == 137
    client.delete()
