"""The process part of the spec: PATH lookup, environment, home directory, hooks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pydeskd.runtime import process as proc
from pydeskd.runtime.errors import SetupFailed
from pydeskd.runtime.hooks import run_hook, run_hooks, run_hooks_warn
from pydeskd.runtime.spec import Hook, Process, User


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_executable_searches_path_in_order(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "tool").write_text("not executable")
    found = executable(tmp_path / "b" / "tool")
    env = [f"PATH={tmp_path / 'a'}:{tmp_path / 'b'}"]
    assert proc.find_executable("tool", env) == str(found)
    assert proc.find_executable(str(found), []) == str(found)


def test_find_executable_errors_like_runc(tmp_path: Path) -> None:
    with pytest.raises(SetupFailed, match="executable file not found in \\$PATH"):
        proc.find_executable("nope", [f"PATH={tmp_path}"])
    with pytest.raises(SetupFailed, match="not found"):
        proc.find_executable("sh", [])  # no PATH in the spec's env: nothing is searched
    with pytest.raises(SetupFailed, match="no such executable"):
        proc.find_executable(str(tmp_path / "missing"), [])


def test_env_gets_home_from_passwd_unless_set(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n")
    assert proc.user_home(1000, str(passwd)) == "/home/u"
    assert proc.user_home(4242, str(passwd)) == "/"
    process = Process(args=("sh",), env=("A=1", "HOME=/custom", "A=2"))
    assert proc.process_env(process) == ["A=2", "HOME=/custom"]


def test_env_adds_home_of_the_user() -> None:
    process = Process(args=("sh",), env=("PATH=/bin",), user=User(uid=987654))
    assert proc.process_env(process) == ["PATH=/bin", "HOME=/"]


def test_hook_gets_state_on_stdin_args_and_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    body = f'echo "$0 $1 $X" > {out}; cat >> {out}'
    run_hook(Hook(path="/bin/sh", args=("sh", "-c", body, "myhook", "arg1"), env=("X=y",)),
             {"id": "c1"})
    first, second = out.read_text().splitlines()
    assert first == "myhook arg1 y"
    assert json.loads(second) == {"id": "c1"}


def test_failing_and_slow_hooks(tmp_path: Path) -> None:
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(SetupFailed, match=r"prestart hook .*exit status 3: broken"):
        run_hooks([Hook(path=str(failing))], "prestart", {})
    with pytest.raises(SetupFailed, match="timed out"):
        run_hook(Hook(path="/bin/sleep", args=("sleep", "5"), timeout=1), {})
    warnings: list[str] = []
    run_hooks_warn([Hook(path=str(failing))], "poststop", {}, warnings.append)
    assert len(warnings) == 1 and "poststop" in warnings[0]


def test_close_fds_from_keeps_what_is_asked() -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        proc.close_fds_from(3, keep=(w2,))
        ok = True
        try:
            os.fstat(r1)
            ok = False
        except OSError:
            pass
        os.write(w2, b"1" if ok else b"0")
        os._exit(0)
    os.close(w2)
    os.close(r1)
    os.close(w1)
    _, status = os.waitpid(pid, 0)
    assert os.read(r2, 1) == b"1" and status == 0
    os.close(r2)


def test_lookup_user_by_name_number_and_group(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    group = tmp_path / "group"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:33:34::/var/www:/bin/false\n")
    group.write_text("root:x:0:\nwww:x:34:\nlogs:x:4:web,other\nstaff:x:50:\n")

    def look(text: str) -> User:
        return proc.lookup_user(text, None, str(passwd), str(group))

    assert look("web") == User(uid=33, gid=34, additional_gids=(4,))
    assert look("33") == User(uid=33, gid=34, additional_gids=(4,))
    assert look("web:staff") == User(uid=33, gid=50)
    assert look("1234") == User(uid=1234, gid=0)  # unknown numbers are fine, as in runc
    assert look("1234:77") == User(uid=1234, gid=77)
    with pytest.raises(SetupFailed, match="unable to find user ghost"):
        look("ghost")
    with pytest.raises(SetupFailed, match="unable to find group nogroup"):
        look("web:nogroup")
