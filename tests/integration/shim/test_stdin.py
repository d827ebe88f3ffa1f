"""stdin through attach: bytes reach the container, a half-close closes its stdin (stdin-once),
and an exec has its own stdin and output."""

from __future__ import annotations

import os
import signal

import pytest

from pydeskd.shim.protocol import ErrorKind, ShimError, Status, Stream
from tests.integration.shim.conftest import ShimEnv, read_log


def test_cat_echoes_stdin_and_exits_on_half_close(env: ShimEnv) -> None:
    _, client = env.start(["cat"], stdin=True)
    payload = os.urandom(200_000).hex().encode() + b"\nlast line without newline"
    with client.attach(stdin=True) as stream:
        client.start()
        stream.send(payload)
        stream.close_stdin()
        out, err = stream.read_all()
    assert out == payload and err == b""
    state = client.wait(timeout=20)
    assert state.exit_code == 0
    logged = b"".join(e["log"].encode() for e in read_log(client.path.parent / "container.log"))
    assert logged == payload
    client.delete()


def test_exec_with_stdin(env: ShimEnv) -> None:
    _, client = env.start(["sleep", "60"])
    client.start()
    client.exec("in1", env.exec_process(["sh", "-c", "tr a-z A-Z; echo done >&2"]), stdin=True)
    with client.attach("in1", stdin=True) as stream:
        client.start("in1")
        stream.send(b"hello shim\n")
        stream.close_stdin()
        chunks = list(stream.chunks())
    # Each stream's bytes in order; stdout and stderr are two pipes, so which of them the shim
    # reads first is a race (Docker does not order across them either).
    assert b"".join(data for s, data in chunks if s is Stream.STDOUT) == b"HELLO SHIM\n"
    assert b"".join(data for s, data in chunks if s is Stream.STDERR) == b"done\n"
    assert {s for s, _ in chunks} == {Stream.STDOUT, Stream.STDERR}
    assert client.wait("in1", timeout=20).exit_code == 0
    # An exec's output is not the container's log.
    assert b"SHIM" not in (client.path.parent / "container.log").read_bytes()
    client.delete("in1")
    client.kill(signal.SIGKILL)
    assert client.wait(timeout=20).status is Status.STOPPED
    client.delete()


def test_exec_of_missing_binary_fails_cleanly(env: ShimEnv) -> None:
    _, client = env.start(["sleep", "60"])
    client.start()
    client.exec("bad", env.exec_process(["/no/such/binary"]))
    # The runtime refuses the exec (exit 1, its error names the binary); the shim reports the
    # runtime's error and ends the exec as Docker does, with 126.
    with pytest.raises(ShimError) as err:
        client.start("bad")
    assert err.value.kind is ErrorKind.FAILED
    assert "/no/such/binary" in err.value.message  # the runtime's own message, passed on
    assert client.wait("bad", timeout=20).exit_code == 126
    assert client.state().status is Status.RUNNING
    client.kill(signal.SIGKILL)
    client.wait(timeout=20)
    client.delete()


def test_a_client_that_does_not_read_never_stalls_the_container(env: ShimEnv) -> None:
    # 24 MiB without newlines: far more than the client buffer (4 MiB) plus socket buffers.
    size = 24 * 1024 * 1024
    _, client = env.start(["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x; echo; exit 9"])
    stream = client.attach()  # never read while the container runs
    client.start()
    state = client.wait(timeout=60)  # finishes although nobody reads the attached stream
    assert state.exit_code == 9
    received = sum(len(data) for _, data in stream.chunks())  # dropped: EOF after a part
    stream.close()
    assert 0 < received < size
    entries = read_log(client.path.parent / "container.log")
    assert sum(len(e["log"]) for e in entries) == size + 1  # the log has all of it
    assert all(len(e["log"]) <= 16 * 1024 for e in entries)
    client.delete()


def test_input_for_a_process_without_stdin_is_dropped_not_blocking(env: ShimEnv) -> None:
    _, client = env.start(["sh", "-c", "sleep 0.5; echo done"])  # no --stdin: /dev/null
    with client.attach(stdin=True) as stream:
        client.start()
        stream.send(b"z" * (4 * 1024 * 1024))  # more than socket buffers: must be drained
        stream.close_stdin()
        assert stream.read_all() == (b"done\n", b"")
    assert client.wait(timeout=20).exit_code == 0
    client.delete()
