"""The runtime's command lines (runc's contract) and how its errors are read back."""

from __future__ import annotations

from pathlib import Path

from pydeskd.shim.runtime import Runtime, error_message

RT = Runtime(Path("/usr/sbin/runc"), Path("/run/r"), Path("/s/runtime.log"))
BASE = ["/usr/sbin/runc", "--root", "/run/r", "--log", "/s/runtime.log", "--log-format", "json"]


def test_create() -> None:
    assert RT.create("c1", Path("/b"), Path("/s/init.pid")) == [
        *BASE, "create", "--bundle", "/b", "--pid-file", "/s/init.pid", "c1"]
    assert RT.create("c1", Path("/b"), Path("/s/p"), Path("/s/c0.sock"))[-3:] == [
        "--console-socket", "/s/c0.sock", "c1"]


def test_start_kill_delete() -> None:
    assert RT.start("c1") == [*BASE, "start", "c1"]
    assert RT.kill("c1", 9) == [*BASE, "kill", "c1", "9"]
    assert RT.kill("c1", 15, all_processes=True) == [*BASE, "kill", "--all", "c1", "15"]
    assert RT.delete("c1") == [*BASE, "delete", "c1"]
    assert RT.delete("c1", force=True) == [*BASE, "delete", "--force", "c1"]


def test_exec_is_detached() -> None:
    assert RT.exec("c1", Path("/s/e.json"), Path("/s/e.pid")) == [
        *BASE, "exec", "--detach", "--process", "/s/e.json", "--pid-file", "/s/e.pid", "c1"]
    tty = RT.exec("c1", Path("/s/e.json"), Path("/s/e.pid"), Path("/s/c1.sock"))
    assert tty[-4:] == ["--tty", "--console-socket", "/s/c1.sock", "c1"]


def test_error_message_prefers_the_json_log() -> None:
    log = ('{"level":"info","msg":"starting"}\nnot json\n'
           '{"level":"error","msg":"container_linux.go:380: no such file\\n"}\n')
    assert error_message(log, b"noise") == "container_linux.go:380: no such file"
    assert error_message("", b"  plain failure\n") == "plain failure"
    assert error_message("", b"") == "the runtime failed and said nothing"
