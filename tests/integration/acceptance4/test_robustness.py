"""The daemon under abuse: kill -9 while 20 containers run (live restore), bad requests, and
200 ``docker run --rm`` from 8 parallel clients leaving nothing behind."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry

COUNTER = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def _request(d: Pydeskd, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
    conn = _UnixConnection(d.socket)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data) if data else None
    except ValueError:
        return resp.status, data


def _line_count(d: Pydeskd, name: str) -> int:
    return len(d.docker("logs", name).stdout.splitlines())


def test_kill_9_and_restart_on_the_same_roots(busybox_mirror: Registry) -> None:
    base = Path(tempfile.mkdtemp(prefix="pd-k9-", dir="/tmp"))
    attached: list[subprocess.Popen[bytes]] = []
    with Pydeskd(base, config={"registry-mirrors": [busybox_mirror.url]}) as d:
        try:
            d.docker("pull", "-q", BUSYBOX)
            for n in range(10):
                out(d, "run", "-d", "--name", f"plain{n}", BUSYBOX, "sh", "-c", COUNTER)
            for n in range(5):
                out(d, "run", "-d", "--name", f"always{n}", "--restart", "always", BUSYBOX,
                    "sh", "-c", COUNTER)
            for n in range(5):
                attached.append(d.popen_docker("run", "--name", f"att{n}", BUSYBOX, "sh", "-c",
                                               COUNTER, stdout=subprocess.PIPE,
                                               stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 30
            while len(out(d, "ps", "-q").split()) < 20:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            before = {n: _line_count(d, n) for n in ("plain0", "always0", "att0")}
            assert d.proc is not None
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
            for proc in attached:  # their daemon went away: the CLI gives up
                proc.wait(timeout=30)
            time.sleep(0.5)  # the containers keep running (and logging) meanwhile
            d.start()
            names = out(d, "ps", "--format", "{{.Names}} {{.State}}").splitlines()
            assert len(names) == 20 and len(set(names)) == 20
            assert all(line.endswith(" running") for line in names), names
            time.sleep(0.5)
            for name, count in before.items():
                assert _line_count(d, name) > count + 5, name  # logs went on across it
            for line in names:
                assert out(d, "exec", line.split()[0], "echo", "alive") == "alive"
            # The policy is followed again: a crash of a restored container is restarted.
            pid = int(out(d, "inspect", "--format", "{{.State.Pid}}", "always0"))
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while out(d, "inspect", "--format", "{{.RestartCount}} {{.State.Running}}",
                      "always0") != "1 true":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            # A restored container stops, waits and is removed as any other.
            out(d, "stop", "-t", "1", "plain0")
            assert out(d, "wait", "plain0") == "137"
            d.docker("rm", "-f", *(line.split()[0] for line in names))
            assert out(d, "ps", "-aq") == ""
        finally:
            for proc in attached:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    shutil.rmtree(base, ignore_errors=True)  # the daemon's roots, once it is stopped


def test_bad_requests_get_4xx_and_the_daemon_keeps_serving(d: Pydeskd) -> None:
    cases: list[tuple[str, str, bytes | None, int, str]] = [
        ("POST", "/containers/create", b"{not json", 400, "invalid"),
        ("POST", "/containers/create", b"[1, 2]", 400, ""),
        ("POST", "/containers/create", json.dumps({"Image": 5}).encode(), 400, ""),
        ("POST", "/containers/create", json.dumps({"Image": BUSYBOX, "Cmd": 7}).encode(),
         400, ""),
        ("POST", "/containers/create",
         json.dumps({"Image": BUSYBOX, "HostConfig": {"Memory": "lots"}}).encode(), 400, ""),
        ("POST", "/containers/create", json.dumps({}).encode(), 400, "config cannot be empty"),
        ("POST", "/containers/create?name=bad/name",
         json.dumps({"Image": BUSYBOX}).encode(), 400, "Invalid container name"),
        ("POST", "/containers/create", json.dumps({"Image": "UPPERCASE"}).encode(), 400,
         "invalid reference format: repository name (library/UPPERCASE) must be lowercase"),
        ("POST", "/containers/create", json.dumps({"Image": "busybox:bad!tag"}).encode(), 400,
         "invalid reference format"),
        ("POST", "/containers/create", json.dumps({"Image": "nosuch/image:x"}).encode(), 404,
         "No such image"),
        ("POST", "/containers/create",
         json.dumps({"Image": BUSYBOX, "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}}
                    ).encode(), 400, ""),
        ("GET", "/containers/nosuch/json", None, 404, "No such container: nosuch"),
        ("POST", "/containers/nosuch/start", None, 404, "No such container"),
        # dockerd's router reads the condition before it looks the container up
        ("POST", "/containers/nosuch/wait?condition=later", None, 400, "invalid condition"),
        ("POST", "/containers/nosuch/kill?signal=NOPE", None, 404, ""),
        ("GET", "/containers/json?filters=%7Bbroken", None, 400, ""),
        ("GET", "/containers/json?filters=" + quote(json.dumps({"nosuch": ["1"]})), None, 400,
         "invalid filter"),
        ("POST", "/exec/nosuch/start", b"{}", 404, "No such exec instance"),
        ("POST", "/containers/nosuch/exec", json.dumps({"Cmd": ["true"]}).encode(), 404, ""),
    ]
    failures = []
    for method, path, body, status, message in cases:
        got, answer = _request(d, method, path, body)
        text = answer.get("message", "") if isinstance(answer, dict) else ""
        if got != status or not text or message not in text:
            failures.append((method, path, body, got, answer))
    # Unknown fields are ignored, as dockerd's JSON decoding does (docker-py and older CLIs
    # send fields newer daemons dropped).
    got, answer = _request(d, "POST", "/containers/create?name=unknown-fields", json.dumps(
        {"Image": BUSYBOX, "Cmd": ["true"], "NoSuchField": {"x": 1},
         "HostConfig": {"AlsoUnknown": True}}).encode())
    if got != 201:
        failures.append(("POST", "unknown fields", None, got, answer))
    cid = out(d, "run", "-d", BUSYBOX, "sleep", "60")
    for method, path, body, status in [
            ("POST", f"/containers/{cid}/kill?signal=NOPE", None, 400),
            ("POST", f"/containers/{cid}/wait?condition=later", None, 400),
            ("POST", f"/containers/{cid}/exec", b"{oops", 400),
            ("POST", f"/containers/{cid}/exec", json.dumps({"Cmd": []}).encode(), 400),
            ("POST", f"/containers/{cid}/rename?name=no/pe", None, 400),
            ("POST", f"/containers/{cid}/resize?h=x&w=1", None, 400)]:
        got, answer = _request(d, method, path, body)
        if got != status or not isinstance(answer, dict) or not answer.get("message"):
            failures.append((method, path, body, got, answer))
    assert not failures, "\n".join(map(repr, failures))
    assert _request(d, "GET", "/_ping")[0] == 200
    assert out(d, "run", "--rm", BUSYBOX, "echo", "still serving") == "still serving"


def _cgroup_dirs(parent: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        candidates = [root / parent.lstrip("/")]
    else:
        candidates = [h / parent.lstrip("/") for h in root.iterdir() if h.is_dir()]
    return [c for c in candidates if c.is_dir()]


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_200_parallel_rm_runs_leave_nothing_behind(d: Pydeskd) -> None:
    parent = f"/pd-acc-{uuid.uuid4().hex[:8]}"
    failures: list[str] = []

    def client(n: int) -> None:
        for _ in range(25):
            done = d.docker("run", "--rm", "--cgroup-parent", parent, BUSYBOX, "true",
                            check=False, timeout=120)
            if done.returncode != 0:
                failures.append(f"{n}: {done.returncode} {done.stderr.decode()}")

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert failures == []
        assert out(d, "ps", "-aq") == ""
        roots = (str(d.data_root), str(d.exec_root))
        with open("/proc/self/mounts") as mounts:
            left = [line.split()[1] for line in mounts
                    if line.split()[1].startswith(roots)]
        assert left == []
        assert d.proc is not None
        leftovers = {p for root in roots for p in _processes_naming(root)} - {d.proc.pid}
        assert leftovers == set()  # no shim, no runtime
        assert list((d.exec_root / "containers").iterdir()) == []
        assert list((d.exec_root / "s").iterdir()) == []
        runtime_state = d.exec_root / "runtime"
        assert not runtime_state.exists() or list(runtime_state.iterdir()) == []
        assert list((d.data_root / "containers").iterdir()) == []
        for cg in _cgroup_dirs(parent):
            assert [c for c in cg.iterdir() if c.is_dir()] == []
    finally:
        for cg in _cgroup_dirs(parent):
            for child in cg.iterdir():
                if child.is_dir():
                    child.rmdir()
            cg.rmdir()
