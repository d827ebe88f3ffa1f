"""The shim's fork server (pydeskd.shim.forkserver): pydesk-runc's main run in a forked child with
the stdio, cwd and argv the console script would get; its exit code reported; nothing of ours
held by the server; gone when its client is. No root needed: pydesk-runc's --version and its
usage errors are enough to see what ran."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.shim import forkserver
from pydeskd.shim.forkserver import ForkClient, ForkServerGone


@pytest.fixture
def client() -> Iterator[ForkClient]:
    made = forkserver.start()
    assert made is not None
    yield made
    made.close()
    with contextlib.suppress(ChildProcessError):  # some tests reap it themselves
        _reap(made.server_pid)


def _reap(pid: int, timeout: float = 10.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _run(client: ForkClient, argv: list[str], cwd: str = "/") -> tuple[int, bytes, bytes]:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        rid = client.submit(argv, cwd, (null, out_w, err_w))
    finally:
        for fd in (null, out_w, err_w):  # passed: the child has its own copies
            os.close(fd)
    code = client.wait(rid, 30.0)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        return code, out.read(), err.read()


def test_runs_pydesk_runc_main_with_the_given_stdio(client: ForkClient) -> None:
    code, out, err = _run(client, ["--version"])
    assert code == 0
    assert out.startswith(b"pydesk-runc version ")
    assert err == b""


def test_reports_the_runtimes_failure_code_and_message(client: ForkClient) -> None:
    code, out, err = _run(client, ["no-such-command"])
    assert code != 0
    assert b"no-such-command" in err
    assert out == b""


def test_the_child_runs_in_the_given_directory(client: ForkClient, tmp_path: Path) -> None:
    # A relative --log is opened in the cwd (the shim passes the bundle).
    code, _, _ = _run(client, ["--log", "rel.log", "--log-format", "json", "bogus"],
                      cwd=str(tmp_path))
    assert code != 0
    assert b"bogus" in (tmp_path / "rel.log").read_bytes()


def test_concurrent_requests_each_get_their_own_output(client: ForkClient) -> None:
    results: dict[int, tuple[int, bytes, bytes]] = {}

    def one(n: int) -> None:
        results[n] = _run(client, ["--version"] if n % 2 else [f"bogus-{n}"])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(8))
    for n, (code, out, err) in results.items():
        if n % 2:
            assert (code, out[:20]) == (0, b"pydesk-runc version ")
        else:
            assert code != 0 and f"bogus-{n}".encode() in err


def test_the_server_holds_only_its_socket_and_wakeup_pipe(client: ForkClient) -> None:
    leak_r, leak_w = os.pipe()  # made before the fork below: must not reach the server
    try:
        other = forkserver.start()
        assert other is not None
        try:
            _run(other, ["--version"])
            fds = {int(fd) for fd in os.listdir(f"/proc/{other.server_pid}/fd")}
            assert fds - {0, 1, 2} and len(fds - {0, 1, 2}) == 3  # socket + wakeup pipe
            targets = {os.readlink(f"/proc/{other.server_pid}/fd/{fd}") for fd in fds}
            mine = {os.readlink(f"/proc/self/fd/{fd}") for fd in (leak_r, leak_w)}
            assert not targets & mine
        finally:
            other.close()
            assert _reap(other.server_pid) is not None
    finally:
        os.close(leak_r)
        os.close(leak_w)


def test_the_server_exits_when_its_client_closes(client: ForkClient) -> None:
    pid = client.server_pid
    client.close()
    status = _reap(pid)
    assert status is not None and os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(ForkServerGone):
        client.submit(["--version"], "/", (0, 1, 2))


def test_a_dead_server_is_reported_not_waited_for(client: ForkClient) -> None:
    os.kill(client.server_pid, signal.SIGKILL)
    _reap(client.server_pid)
    with pytest.raises(ForkServerGone):
        rid = client.submit(["--version"], "/", (0, 1, 2))
        client.wait(rid, 5.0)
