"""Containers and execs with a terminal: the pty master comes over the console socket, the
shim streams it raw, resizes it (TIOCSWINSZ), and logs its output as stdout."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from pydeskd.shim.client import start_shim
from pydeskd.shim.protocol import ErrorKind, ShimError, Status, Stream
from tests.integration.shim.conftest import ShimEnv, read_log

STTY_LOOP = "while true; do stty size; sleep 0.2; done"


def _until(chunks: Iterator[tuple[Stream, bytes]], needle: bytes, buffer: bytes = b"") -> bytes:
    while needle not in buffer:
        stream, data = next(chunks)
        assert stream is Stream.STDOUT
        buffer += data
    return buffer


def test_tty_container_sees_resize(env: ShimEnv) -> None:
    cid = env.new_id()
    client = start_shim(cid, env.bundle(cid, ["sh", "-c", STTY_LOOP], tty=True,
                                        console_size=(24, 80)),
                        env.state_dir(cid), runtime=env.runtime, runtime_root=env.root)
    with client.attach() as stream:
        assert stream.tty
        client.start()
        chunks = stream.chunks()
        _until(chunks, b"24 80")
        client.resize(width=132, height=50)
        _until(chunks, b"50 132")
    client.kill(signal.SIGKILL)
    assert client.wait(timeout=20).exit_code == 137
    entries = read_log(client.path.parent / "container.log")
    assert {e["stream"] for e in entries} == {"stdout"}
    text = "".join(e["log"] for e in entries)
    assert "24 80\r\n" in text and "50 132\r\n" in text  # the pty's onlcr: \r\n
    client.delete()


def test_tty_exec_resize_and_exit_code(env: ShimEnv) -> None:
    _, client = env.start(["sleep", "60"])
    client.start()
    with pytest.raises(ShimError) as err:
        client.resize(width=100, height=30)  # no terminal: nothing to resize
    assert err.value.kind is ErrorKind.CONFLICT
    script = "stty size; read line; stty size; echo got $line; exit 5"
    client.exec("t1", env.exec_process(["sh", "-c", script]), tty=True)
    with client.attach("t1", stdin=True) as stream:
        assert stream.tty
        client.start("t1")
        chunks = stream.chunks()
        buffer = _until(chunks, b"\n")  # the first `stty size`
        client.resize(width=100, height=30, exec_id="t1")
        stream.send(b"hello\n")
        buffer = _until(chunks, b"got hello", buffer)
        for _ in chunks:  # the output ends when the exec exits
            pass
    assert b"30 100" in buffer
    state = client.wait("t1", timeout=20)
    assert state.status is Status.STOPPED and state.exit_code == 5
    client.delete("t1")
    client.kill(signal.SIGKILL)
    client.wait(timeout=20)
    client.delete()
