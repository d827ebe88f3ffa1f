"""docker-py against pydeskd: attach_socket, exec_run(stream=True, demux=True),
logs(stream=True), events(decode=True), and the container objects' basic calls."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from tests.integration.acceptance4.conftest import BUSYBOX
from tests.support.pydeskd import Pydeskd


def _recv_until(sock: socket.socket, needle: bytes, timeout: float = 20) -> bytes:
    got = b""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while needle not in got and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def test_attach_socket_tty(d: Pydeskd) -> None:
    client = d.client()
    c = client.containers.run(BUSYBOX, "sh", detach=True, tty=True, stdin_open=True,
                              name="att")
    wrapped = c.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    sock = wrapped._sock
    try:
        sock.sendall(b"echo attached-$((1+1))\n")
        assert b"attached-2" in _recv_until(sock, b"attached-2")
        sock.sendall(b"exit 6\n")
        assert c.wait(timeout=20)["StatusCode"] == 6
    finally:
        wrapped.close()


def test_exec_run_stream_demux(d: Pydeskd) -> None:
    client = d.client()
    c = client.containers.run(BUSYBOX, ["sleep", "60"], detach=True, name="dx")
    result = c.exec_run(["sh", "-c", "echo o1; echo e1 >&2; sleep 0.2; echo o2"],
                        stream=True, demux=True)
    out, err = b"", b""
    for o, e in result.output:
        out += o or b""
        err += e or b""
    assert (out, err) == (b"o1\no2\n", b"e1\n")
    plain = c.exec_run(["sh", "-c", "echo x; exit 3"], environment={"V": "1"}, workdir="/tmp")
    assert (plain.exit_code, plain.output) == (3, b"x\n")
    both = c.exec_run(["sh", "-c", "echo $V $(pwd); echo bad >&2"],
                      environment={"V": "1"}, workdir="/tmp", demux=True)
    assert both.output == (b"1 /tmp\n", b"bad\n")


def test_logs_stream_and_events_decode(d: Pydeskd) -> None:
    client = d.client()
    events: list[dict[str, Any]] = []
    stream = client.events(decode=True, since=int(time.time()) - 1,
                           filters={"type": "container", "label": "py=1"})

    def collect() -> None:
        for event in stream:
            events.append(event)
            if event.get("Action") == "destroy":
                return

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    time.sleep(0.3)
    c = client.containers.run(BUSYBOX, ["sh", "-c", "for i in 1 2 3; do echo l$i; "
                                        "sleep 0.3; done"], detach=True, labels={"py": "1"})
    lines = list(c.logs(stream=True, follow=True))
    assert b"".join(lines) == b"l1\nl2\nl3\n"
    assert c.wait(timeout=20)["StatusCode"] == 0
    c.reload()
    assert c.status == "exited"
    c.remove()
    collector.join(20)
    stream.close()
    actions = [e["Action"] for e in events]
    assert actions[:2] == ["create", "start"] and actions[-2:] == ["die", "destroy"], actions
    assert all(e["id"] == c.id and e["status"] == e["Action"] for e in events)
