"""Issue 2's shim acceptance: 20 containers outlive the parent that started them (kill -9);
attach and exec work on them afterwards; stopping them records exit codes and leaves complete
logs; deleting them leaves nothing. (The tty resize is in test_tty.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydeskd.shim.client import ShimClient
from pydeskd.shim.protocol import Status, Stream
from tests.integration.shim.conftest import ShimEnv, leftover_cgroups, pid_alive, read_log

COUNT = 20
TICKER = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"

# The parent: starts every shim and container, reports, then waits to be killed.
PARENT = """
import json, sys, time
from pathlib import Path
from pydeskd.shim.client import start_shim
for spec in json.loads(sys.argv[1]):
    client = start_shim(spec["id"], Path(spec["bundle"]), Path(spec["state"]),
                        runtime=Path(spec["runtime"]), runtime_root=Path(spec["root"]))
    client.start()
    print(spec["id"], client.path, flush=True)
time.sleep(600)
"""


def _log_ticks(state_dir: Path) -> list[str]:
    return [e["log"] for e in read_log(state_dir / "container.log") if e["stream"] == "stdout"]


def test_twenty_containers_outlive_their_parent(env: ShimEnv) -> None:
    specs = []
    for _ in range(COUNT):
        cid = env.new_id()
        bundle = env.bundle(cid, ["sh", "-c", TICKER])
        specs.append({"id": cid, "bundle": str(bundle), "state": str(env.state_dir(cid)),
                      "runtime": str(env.runtime), "root": str(env.root)})
    parent = subprocess.Popen([sys.executable, "-c", PARENT, json.dumps(specs)],
                              stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[3])
    try:
        assert parent.stdout is not None
        started = [parent.stdout.readline().split() for _ in range(COUNT)]
        assert [s[0] for s in started] == [s["id"] for s in specs]
    finally:
        parent.kill()  # SIGKILL, mid-sleep: nothing of it runs any more
        parent.wait()

    # As a restarted daemon would: find each shim from its state dir alone.
    clients = [ShimClient.for_state_dir(Path(s["state"])) for s in specs]
    assert [str(c.path) for c in clients] == [s[1] for s in started]
    states = {c.path: c.state() for c in clients}
    logged = [len(_log_ticks(c.path.parent)) for c in clients]
    time.sleep(1.0)
    for client in clients:
        state = client.state()
        assert state.status is Status.RUNNING and pid_alive(state.pid)
        shim_pid = json.loads((client.path.parent / "shim.json").read_text())["pid"]
        assert pid_alive(shim_pid)
    tickers = clients
    for client, before in zip(tickers, logged, strict=True):  # still logging, parent dead
        assert len(_log_ticks(client.path.parent)) > before

    # Attach to one: live output, in the multiplexed framing.
    logged_before = len(_log_ticks(tickers[0].path.parent))
    with tickers[0].attach() as stream:
        seen: list[str] = []
        for kind, data in stream.chunks():
            assert kind is Stream.STDOUT
            seen += data.decode().splitlines()
            if len(seen) >= 3:
                break
    numbers = [int(line.split()[1]) for line in seen]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert numbers[0] >= logged_before  # live output, not a replay of the log

    # Exec in another: its exit code and its own output.
    ticker = tickers[1]
    ticker.exec("e1", env.exec_process(["sh", "-c", "echo exec-out; echo exec-err >&2; exit 7"]))
    with ticker.attach("e1") as stream:
        started_exec = ticker.start("e1")
        assert started_exec.pid > 0
        out, err = stream.read_all()
    assert (out, err) == (b"exec-out\n", b"exec-err\n")
    exited = ticker.wait("e1", timeout=20)
    assert exited.status is Status.STOPPED and exited.exit_code == 7
    assert ticker.state().status is Status.RUNNING  # the container is untouched
    ticker.delete("e1")
    assert not any(p.name.startswith("exec") for p in ticker.path.parent.iterdir())

    # Stop all: SIGTERM is ignored by a shell that is pid 1 without a handler (runc and
    # pydesk-runc alike), so, as `docker stop` does, SIGKILL follows.
    for client in clients:
        client.kill(signal.SIGTERM)
    time.sleep(0.5)
    assert all(c.state().status is Status.RUNNING for c in clients)
    for client in clients:
        client.kill(signal.SIGKILL)
    for client in clients:
        state = client.wait(timeout=30)
        assert state.exit_code == 128 + signal.SIGKILL
        record = json.loads((client.path.parent / "exit.json").read_text())
        assert record["exit_code"] == 137 and record["pid"] == states[client.path].pid

    # Logs complete: every tick, in order, from 0.
    for client in tickers:
        ticks = _log_ticks(client.path.parent)
        assert ticks == [f"tick {i}\n" for i in range(len(ticks))]
        assert len(ticks) >= 8

    # Delete all: nothing left.
    shim_pids = [json.loads((c.path.parent / "shim.json").read_text())["pid"] for c in clients]
    for client in clients:
        client.delete()
        assert not client.path.parent.exists()
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in shim_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in shim_pids)
    assert all(not pid_alive(s.pid) for s in states.values())
    listed = subprocess.run([str(env.runtime), "--root", str(env.root), "list", "-q"],
                            capture_output=True, text=True, check=False).stdout.split()
    assert listed == []
    for spec in specs:
        assert leftover_cgroups(f"{env.cgroup_parent}/{spec['id']}") == []
    assert os.listdir(env.base / "s") == []
