"""The real shim, as a process, over a stand-in runtime (fake_runtime.py): no root needed.

These cover the shim's own logic (detaching, stdio, the state machine, reaping, exec, errors)
on any machine; the integration tests run the same paths with runc and pydesk-runc.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pydeskd.shim.client import ShimClient, ShimStartError, start_shim
from pydeskd.shim.protocol import ErrorKind, EventType, ShimError, Status
from tests.unit.shim.conftest import Env


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def test_lifecycle_log_and_exit_record(env: Env) -> None:
    client = env.start(["sh", "-c", "echo one; echo two >&2; exit 5"])
    assert client.state().status is Status.CREATED
    client.start()
    state = client.wait(timeout=20)
    assert state.exit_code == 5
    record = json.loads((client.path.parent / "exit.json").read_text())
    assert record == {"pid": state.pid, "exit_code": 5, "exited_at": state.exited_at}
    lines = [json.loads(x) for x in (client.path.parent / "container.log").read_text().split()]
    assert sorted((e["stream"], e["log"]) for e in lines) == [("stderr", "two\n"),
                                                               ("stdout", "one\n")]
    assert [e.type for e in client.events()] == [EventType.CREATE, EventType.START,
                                                 EventType.EXIT]
    shim_pid = json.loads((client.path.parent / "shim.json").read_text())["pid"]
    client.delete()
    assert not client.path.parent.exists()
    assert _gone(shim_pid)


def test_signal_exit_code_and_many_waiters(env: Env) -> None:
    client = env.start(["sleep", "30"])
    client.start()
    results: list[int | None] = []
    waiters = [threading.Thread(target=lambda: results.append(client.wait(timeout=20).exit_code))
               for _ in range(5)]
    for w in waiters:
        w.start()
    time.sleep(0.2)
    client.kill(signal.SIGTERM)
    for w in waiters:
        w.join(20)
    assert results == [143] * 5
    client.delete()


def test_stdin_half_close(env: Env) -> None:
    client = env.start(["cat"], stdin=True)
    with client.attach(stdin=True) as stream:
        client.start()
        stream.send(b"ping\npong")
        stream.close_stdin()
        assert stream.read_all() == (b"ping\npong", b"")
    assert client.wait(timeout=20).exit_code == 0
    client.delete()


def test_concurrent_execs_get_their_own_exit_codes(env: Env) -> None:
    """Execs are reparented orphans reaped by waitpid(-1), racing the runtime calls that the
    shim waits for: no status may be stolen or mixed up."""
    client = env.start(["sleep", "60"])
    client.start()
    codes: dict[str, int | None] = {}

    def run(n: int) -> None:
        exec_id = f"e{n}"
        client.exec(exec_id, {"args": ["sh", "-c", f"echo {n}; exit {n}"]})
        with client.attach(exec_id) as stream:
            client.start(exec_id)
            out, _ = stream.read_all()
        assert out == f"{n}\n".encode()
        codes[exec_id] = client.wait(exec_id, timeout=30).exit_code

    threads = [threading.Thread(target=run, args=(n,)) for n in range(1, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == {f"e{n}": n for n in range(1, 13)}
    assert client.state().status is Status.RUNNING


def test_exec_ids_and_states_are_checked(env: Env) -> None:
    client = env.start(["sleep", "60"])
    with pytest.raises(ShimError) as err:
        client.exec("e1", {"args": ["true"]})
    assert err.value.kind is ErrorKind.CONFLICT  # the container is only created
    client.start()
    client.exec("e1", {"args": ["true"]})
    with pytest.raises(ShimError) as err:
        client.exec("e1", {"args": ["true"]})
    assert err.value.kind is ErrorKind.CONFLICT
    with pytest.raises(ShimError) as err:
        client.exec("e2", {"args": []})
    assert err.value.kind is ErrorKind.INVALID
    with pytest.raises(ShimError) as err:
        client.kill(signal.SIGTERM, exec_id="e1")  # created, not started: no pid to signal
    assert err.value.kind is ErrorKind.CONFLICT
    with pytest.raises(ShimError) as err:
        client.delete("e1")
    assert err.value.kind is ErrorKind.CONFLICT
    client.start("e1")
    assert client.wait("e1", timeout=20).exit_code == 0
    client.delete("e1")
    with pytest.raises(ShimError) as err:
        client.state("e1")
    assert err.value.kind is ErrorKind.NOT_FOUND


def test_runtime_error_is_reported_and_nothing_is_left(env: Env) -> None:
    first = env.start(["sleep", "60"])  # container "c1"
    first.start()
    bundle = env.base / "b1"
    with pytest.raises(ShimStartError, match="container with id exists: c1"):
        start_shim("c1", bundle, env.base / "s-dup", runtime=env.runtime,
                   runtime_root=env.base / "root")
    assert not (env.base / "s-dup").exists()
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                         check=True).stdout
    assert str(env.base / "s-dup") not in out
    # The failed shim did not clean up what was not its own: c1 still runs.
    assert first.state().status is Status.RUNNING
    assert Path(f"/proc/{first.state().pid}").exists()


def test_shim_outlives_a_killed_parent(env: Env) -> None:
    bundle = env.base / "bp"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": [
        "sh", "-c", "while true; do echo tick; sleep 0.1; done"]}}))
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom pydeskd.shim.client import start_shim\n"
        f"c = start_shim('p1', Path('{bundle}'), Path('{env.base / 'sp'}'),"
        f" runtime=Path('{env.runtime}'), runtime_root=Path('{env.base / 'root'}'))\n"
        "c.start()\nprint(c.path, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        path = Path(parent.stdout.readline().strip())
    finally:
        parent.kill()
        parent.wait()
    client = ShimClient(path)
    env.clients.append(client)
    before = (path.parent / "container.log").stat().st_size
    time.sleep(0.5)
    assert client.state().status is Status.RUNNING
    assert (path.parent / "container.log").stat().st_size > before


def test_log_outside_the_state_dir_outlives_delete(env: Env) -> None:
    log = env.base / "logs" / "c-json.log"
    log.parent.mkdir()
    client = env.start(["sh", "-c", "echo kept"], log_path=log)
    client.start()
    client.wait(timeout=20)
    client.delete()
    assert not client.path.parent.exists()
    assert [json.loads(x)["log"] for x in log.read_text().splitlines()] == ["kept\n"]


def test_terminal_resize_and_raw_stream(env: Env) -> None:
    script = "stty size; read line; stty size; echo got $line"
    client = env.start(["sh", "-c", script], tty=True)
    with client.attach(stdin=True) as stream:
        assert stream.tty
        client.resize(width=90, height=20)  # the pty exists from create on
        client.start()
        chunks = stream.chunks()
        buffer = b""
        while b"20 90" not in buffer:
            buffer += next(chunks)[1]
        client.resize(width=132, height=50)
        stream.send(b"hi\n")
        for _, data in chunks:
            buffer += data
    assert b"50 132" in buffer and b"got hi" in buffer
    assert client.wait(timeout=20).exit_code == 0
    logged = "".join(json.loads(x)["log"]
                     for x in (client.path.parent / "container.log").read_text().splitlines())
    assert "20 90\r\n" in logged and "got hi\r\n" in logged
    client.delete()


def test_terminal_exec(env: Env) -> None:
    client = env.start(["sleep", "60"])
    client.start()
    client.exec("t", {"args": ["sh", "-c", "read x; stty size; exit 3"]}, tty=True)
    with client.attach("t", stdin=True) as stream:
        client.start("t")
        client.resize(width=70, height=10, exec_id="t")
        stream.send(b"\n")
        out, err = stream.read_all()
    assert b"10 70\r\n" in out and err == b""
    assert client.wait("t", timeout=20).exit_code == 3


def test_resize_is_not_held_up_by_a_blocked_stdin_writer(env: Env) -> None:
    client = env.start(["sleep", "60"], tty=True)  # never reads its terminal
    client.start()
    stream = client.attach(stdin=True)
    sender = threading.Thread(target=lambda: stream.send(b"x" * (1 << 20)), daemon=True)
    sender.start()  # fills the pty's input queue: the shim's write blocks
    time.sleep(0.5)
    began = time.monotonic()
    client.resize(width=100, height=40)
    assert time.monotonic() - began < 2.0
    client.kill(signal.SIGKILL)
    assert client.wait(timeout=20).exit_code == 137
    stream.close()
    client.delete()
