"""The guest init's seam for real, where no root or VM is needed: children (spawn, reap, a
stdin, output files, has_children), signals as wakeups, the unix-socket ping, files.

Each check runs in a fresh interpreter: ``reap`` waits for any child (PID 1's duty), which in
the pytest process could reap another test's helper.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pydeskd

GUEST = str(Path(pydeskd.__file__).resolve().parents[1])


def run_script(body: str, tmp_path: Path) -> dict[str, object]:
    script = textwrap.dedent("""
        import json, os, signal, sys, time
        sys.path.insert(0, sys.argv[1])
        from pydeskd.guestinit.system import System
        tmp = sys.argv[2]
        out = {}
    """) + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    result = subprocess.run([sys.executable, "-c", script, GUEST, str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_spawn_reap_stdin_output_and_has_children(tmp_path: Path) -> None:
    out = run_script("""
        s = System()
        env = {"PATH": os.environ["PATH"]}
        log = os.path.join(tmp, "out.log")
        out["none_before"] = s.has_children()
        a = s.spawn(["sh", "-c", "exit 3"], env, output=log)
        b = s.spawn(["cat"], env, output=log, stdin_data=b"from stdin\\n")
        c = s.spawn(["sh", "-c", "echo $0 >&2; kill -TERM $$", "to-stderr"], env, output=log)
        out["some"] = s.has_children()
        codes = {}
        deadline = time.monotonic() + 20
        while len(codes) < 3 and time.monotonic() < deadline:
            codes.update(dict(s.reap()))
            time.sleep(0.02)
        out["codes"] = [codes.get(a), codes.get(b), codes.get(c)]
        out["none_after"] = s.has_children()
        out["log"] = sorted(open(log).read().splitlines())
    """, tmp_path)
    assert out["none_before"] is False
    assert out["some"] is True
    assert out["codes"] == [3, 0, -15]
    assert out["none_after"] is False
    assert out["log"] == ["from stdin", "to-stderr"]


def test_signals_wake_the_wait_and_say_which(tmp_path: Path) -> None:
    out = run_script("""
        s = System()
        s.catch_signals()
        started = time.monotonic()
        out["idle"] = s.wait(0.05, [])
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGTERM)
        out["signals"] = sorted(s.wait(5, [])[0])
        r, w = os.pipe()
        os.write(w, b"x")
        out["ready_fd"] = s.wait(5, [r])[1] == [r]
        out["fast"] = time.monotonic() - started < 4
    """, tmp_path)
    assert out["idle"] == [[], []]
    assert out["signals"] == sorted([signal.SIGUSR2, signal.SIGTERM])
    assert out["ready_fd"] is True
    assert out["fast"] is True


def test_ping_a_unix_socket_server(tmp_path: Path) -> None:
    out = run_script("""
        import socket, threading
        path = os.path.join(tmp, "api.sock")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen()
        def serve():
            conn, _ = srv.accept()
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nOK")
            conn.close()
        threading.Thread(target=serve, daemon=True).start()
        s = System()
        out["reply"] = s.ping(path, 5).decode()
        out["absent"] = s.ping(os.path.join(tmp, "none.sock"), 1).decode()
    """, tmp_path)
    assert str(out["reply"]).endswith("\r\n\r\nOK")
    assert out["absent"] == ""


def test_files_and_block_device_size(tmp_path: Path) -> None:
    out = run_script("""
        s = System()
        p = os.path.join(tmp, "etc", "ssh", "key")
        s.write(p, "secret\\n", 0o600)
        out["mode"] = oct(os.stat(p).st_mode & 0o777)
        out["data"] = s.read(p).decode()
        s.write(p, b"x")
        out["rewritten"] = s.read(p).decode()
        out["listdir_missing"] = s.listdir(os.path.join(tmp, "nope"))
    """, tmp_path)
    assert out["mode"] == "0o600"
    assert out["data"] == "secret\n"
    assert out["rewritten"] == "x"
    assert out["listdir_missing"] == []
    assert os.path.exists(tmp_path / "etc/ssh/key")
