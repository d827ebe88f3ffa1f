"""docker exec without a new interpreter: with pydesk-runc the shim runs ``exec`` through its
fork server (pydeskd.shim.forkserver); with the server gone it spawns the runtime as before.
The shim's debug log names every runtime it spawns, which tells the two paths apart."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from pydeskd.shim.client import ShimClient
from pydeskd.shim.protocol import Stream
from tests.integration.shim.conftest import PYDESK_RUNC, ShimEnv


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _exec_output(env: ShimEnv, client: ShimClient, exec_id: str, args: list[str]) -> bytes:
    client.exec(exec_id, env.exec_process(args))
    with client.attach(exec_id) as stream:
        client.start(exec_id)
        chunks = list(stream.chunks())
    assert client.wait(exec_id, timeout=20).exit_code == 0
    client.delete(exec_id)
    return b"".join(data for s, data in chunks if s is Stream.STDOUT)


def _spawned_execs(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if "spawn" in line and " exec " in line)


@pytest.mark.parametrize("runtime", [PYDESK_RUNC], indirect=True)
def test_exec_goes_through_the_fork_server_and_falls_back_when_it_is_gone(
        env: ShimEnv) -> None:
    _, client = env.start(["sleep", "60"], debug=True)
    client.start()
    state_dir = client.path.parent
    shim_pid = json.loads((state_dir / "shim.json").read_text())["pid"]
    init_pid = client.state().pid
    servers = [pid for pid in _children_of(shim_pid) if pid != init_pid]
    assert len(servers) == 1, "one fork server, the shim's child"
    server = servers[0]
    # Forked, not exec'd: the same program as the shim.
    assert Path(f"/proc/{server}/cmdline").read_bytes() == \
        Path(f"/proc/{shim_pid}/cmdline").read_bytes()

    assert _exec_output(env, client, "fast", ["echo", "through the server"]) == \
        b"through the server\n"
    assert _spawned_execs(state_dir / "shim.log") == 0

    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # the shim's reaper collects it
    assert _exec_output(env, client, "slow", ["echo", "spawned"]) == b"spawned\n"
    assert _spawned_execs(state_dir / "shim.log") == 1

    client.kill(signal.SIGKILL)
    client.wait(timeout=20)
    client.delete()


@pytest.mark.parametrize("runtime", [PYDESK_RUNC], indirect=True)
def test_the_fork_server_goes_with_its_shim(env: ShimEnv) -> None:
    _, client = env.start(["sleep", "60"])
    client.start()
    shim_pid = json.loads((client.path.parent / "shim.json").read_text())["pid"]
    init_pid = client.state().pid
    (server,) = [pid for pid in _children_of(shim_pid) if pid != init_pid]
    client.kill(signal.SIGKILL)
    client.wait(timeout=20)
    client.delete()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{server}").exists()


@pytest.mark.parametrize("runtime", [PYDESK_RUNC], indirect=True)
def test_start_kill_and_delete_go_through_the_fork_server(env: ShimEnv) -> None:
    _, client = env.start(["sleep", "60"], debug=True)
    log = client.path.parent / "shim.log"
    client.start()
    assert client.state().status.value == "running"
    client.kill(signal.SIGKILL)
    assert client.wait(timeout=20).exit_code == 137
    with log.open() as still_open:  # delete removes the state dir, the open file stays
        client.delete()
        text = still_open.read()
    spawned = [line for line in text.splitlines() if "spawn" in line]
    for command in (" start ", " kill ", " delete "):
        assert not [line for line in spawned if command in line], spawned
