"""create/start/exec/ps/kill/delete of pydesk-runc, end to end, against real processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.support.busybox import write_config
from tests.support.conformance import Box
from tests.support.runtimes import cgroup_dirs, pid_alive, reap_children, run_captured


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_created_init_waits_then_start_execs(box: Box) -> None:
    bundle = box.bundle(["sleep", "300"])
    rt = box.runtime
    pid_file = box.workdir / "init.pid"
    rt.create(bundle.id, bundle.path, pid_file).check()
    pid = int(pid_file.read_text())
    state = rt.state(bundle.id)
    assert state["status"] == "created" and state["pid"] == pid
    assert "sleep" not in _cmdline(pid)  # the user process has not been exec'd yet
    assert cgroup_dirs(bundle.cgroups_path)
    rt("start", bundle.id).check()
    deadline = time.monotonic() + 5
    while "sleep 300" not in _cmdline(pid):
        assert time.monotonic() < deadline, _cmdline(pid)
        time.sleep(0.01)
    assert rt.state(bundle.id)["status"] == "running"
    second = rt("start", bundle.id)
    assert second.returncode != 0 and "already running" in second.stderr
    listed = json.loads(rt("list", "--format", "json").check().stdout)
    assert [c["id"] for c in listed] == [bundle.id]
    assert rt("list", "-q").check().stdout == bundle.id + "\n"
    rt("kill", bundle.id, "KILL").check()
    rt.wait_status(bundle.id, "stopped")
    killed_again = rt("kill", bundle.id)
    assert killed_again.returncode != 0 and "not running" in killed_again.stderr
    rt("delete", bundle.id).check()
    assert not pid_alive(pid)
    assert not cgroup_dirs(bundle.cgroups_path)
    assert not (rt.root / bundle.id).exists()


def test_exec_options_exit_status_and_detach(box: Box) -> None:
    bundle = box.bundle(["sleep", "300"])
    rt = box.runtime
    rt.create(bundle.id, bundle.path).check()
    rt("start", bundle.id).check()
    result = rt("exec", "--env", "FOO=bar", "--cwd", "/tmp", "-u", "1000:1001",
                "--additional-gids", "7", bundle.id, "sh", "-c",
                'echo "$FOO $(pwd) $(id -u) $(id -g) $(id -G) $HOME"; '
                'grep NoNewPrivs /proc/self/status; exit 7')
    assert result.returncode == 7, result.describe()
    lines = result.stdout.splitlines()
    assert lines[0] == "bar /tmp 1000 1001 1001 7 /"
    assert lines[1].split() == ["NoNewPrivs:", "1"]
    # --process FILE replaces the whole process.
    process = {"args": ["sh", "-c", "echo $A; pwd"], "cwd": "/etc",
               "env": ["A=from-file", "PATH=/bin"], "user": {"uid": 0, "gid": 0}}
    process_file = box.workdir / "process.json"
    process_file.write_text(json.dumps(process))
    assert rt("exec", "--process", str(process_file), bundle.id).check().stdout == \
        "from-file\n/etc\n"
    pid_file = box.workdir / "exec.pid"
    rt("exec", "-d", "--pid-file", str(pid_file), bundle.id, "sleep", "200").check()
    exec_pid = int(pid_file.read_text())
    assert "sleep 200" in _cmdline(exec_pid)
    # The exec'd process is in the container's pid namespace and cgroup.
    init_pid = rt.state(bundle.id)["pid"]
    assert os.readlink(f"/proc/{exec_pid}/ns/pid") == os.readlink(f"/proc/{init_pid}/ns/pid")
    pids = json.loads(rt("ps", "--format", "json", bundle.id).check().stdout)
    assert init_pid in pids and exec_pid in pids
    table = rt("ps", bundle.id).check().stdout.splitlines()
    assert "PID" in table[0] and len(table) == 3
    # A user name is looked up in the container's /etc/passwd.
    assert rt("exec", "-u", "nobody", bundle.id, "id").check().stdout == \
        "uid=65534(nobody) gid=65534(nogroup)\n"
    missing = rt("exec", bundle.id, "no-such-command")
    assert missing.returncode != 0 and "not found" in missing.stderr
    rt("kill", "--all", bundle.id, "KILL").check()
    # The detached exec'd process was orphaned to us (the subreaper), as it would be to a shim;
    # the container's init finishes dying only once its namespace's last zombie is reaped.
    deadline = time.monotonic() + 10
    while rt.state(bundle.id)["status"] != "stopped":
        assert time.monotonic() < deadline
        reap_children()
        time.sleep(0.02)
    assert not pid_alive(exec_pid)
    stopped = rt("exec", bundle.id, "true")
    assert stopped.returncode != 0 and "stopped" in stopped.stderr
    rt("delete", bundle.id).check()


def test_delete_of_created_container_kills_it_like_runc(box: Box) -> None:
    bundle = box.bundle(["true"])
    rt = box.runtime
    pid_file = box.workdir / "c.pid"
    rt.create(bundle.id, bundle.path, pid_file).check()
    rt("delete", bundle.id).check()
    assert not pid_alive(int(pid_file.read_text()))
    assert not cgroup_dirs(bundle.cgroups_path)


def test_run_detach_and_no_pivot(box: Box) -> None:
    bundle = box.sh("cat /proc/self/mountinfo | head -1; exit 5")
    rt = box.runtime
    result = rt("run", "--no-pivot", "--bundle", str(bundle.path), bundle.id)
    assert result.returncode == 5, result.describe()
    assert not (rt.root / bundle.id).exists()
    detached = box.bundle(["sleep", "300"], name="det")
    rt.ids.add(detached.id)
    rt("run", "-d", "-b", str(detached.path), detached.id).check()
    assert rt.state(detached.id)["status"] == "running"
    rt("delete", "--force", detached.id).check()
    assert not cgroup_dirs(detached.cgroups_path)


def test_failure_in_the_init_leaves_nothing(box: Box) -> None:
    bundle = box.sh("true")
    bundle.add_mount("/data", "bind", "/no/such/source", ["rbind"])
    bundle.write()
    log = box.workdir / "runc.log"
    rt = box.runtime
    result = rt("--log", str(log), "--log-format", "json", "create", "-b", str(bundle.path),
                bundle.id)
    assert result.returncode == 1
    assert "/no/such/source" in result.stderr and len(result.stderr.splitlines()) == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "/no/such/source" in entry["msg"]
    assert not (rt.root / bundle.id).exists()
    assert not cgroup_dirs(bundle.cgroups_path)
    # A missing executable is a create-time error too (as runc), with nothing left.
    missing = box.bundle(["no-such-binary"], name="nobin")
    result = rt.create(missing.id, missing.path)
    assert result.returncode == 1 and "executable file not found" in result.stderr
    assert not (rt.root / missing.id).exists() and not cgroup_dirs(missing.cgroups_path)


def test_existing_id_is_refused_without_touching_the_container(box: Box) -> None:
    bundle = box.bundle(["sleep", "300"])
    rt = box.runtime
    rt.create(bundle.id, bundle.path).check()
    again = rt.create(bundle.id, bundle.path)
    assert again.returncode == 1 and "exists" in again.stderr
    assert rt.state(bundle.id)["status"] == "created"
    rt("delete", "--force", bundle.id).check()


def test_hooks_run_at_their_points_with_state(box: Box) -> None:
    bundle = box.bundle(["sh", "-c", "cat /hooks-seen 2>/dev/null; echo main"])
    out = box.host_dir("hooks")

    def host_hook(name: str) -> dict[str, object]:
        return {"path": "/bin/sh",
                "args": ["sh", "-c", f"{{ cat; echo; echo $HOOKENV; }} > {out}/{name}.json",
                         "hook"], "env": [f"HOOKENV={name}-env"]}

    def container_hook(name: str) -> dict[str, object]:
        # createContainer runs before pivot_root (host paths); startContainer inside.
        target = f"{bundle.rootfs}/{name}" if name == "createContainer" else f"/{name}"
        return {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {target}"]}

    bundle.config["hooks"] = {
        "prestart": [host_hook("prestart")], "createRuntime": [host_hook("createRuntime")],
        "createContainer": [container_hook("createContainer")],
        "startContainer": [container_hook("startContainer")],
        "poststart": [host_hook("poststart")], "poststop": [host_hook("poststop")]}
    write_config(bundle.path, bundle.config)
    rt = box.runtime
    rt.create(bundle.id, bundle.path).check()
    for name in ("prestart", "createRuntime"):
        text, env = (out / f"{name}.json").read_text().splitlines()
        state = json.loads(text)
        assert state["id"] == bundle.id and state["status"] == "creating" and state["pid"] > 0
        assert env == f"{name}-env"
    assert json.loads((bundle.rootfs / "createContainer").read_text())["id"] == bundle.id
    assert not (out / "poststart.json").exists()
    rt("start", bundle.id).check()
    assert json.loads((out / "poststart.json").read_text().splitlines()[0])["status"] == "running"
    rt.wait_status(bundle.id, "stopped")
    assert json.loads((bundle.rootfs / "startContainer").read_text())["status"] == "created"
    rt("delete", bundle.id).check()
    assert json.loads((out / "poststop.json").read_text().splitlines()[0])["status"] == "stopped"


def test_failing_prestart_hook_fails_create_and_cleans_up(box: Box) -> None:
    bundle = box.bundle(["true"])
    bundle.config["hooks"] = {"prestart": [{"path": "/bin/false"}]}
    write_config(bundle.path, bundle.config)
    rt = box.runtime
    result = rt.create(bundle.id, bundle.path)
    assert result.returncode == 1 and "prestart hook /bin/false" in result.stderr
    assert not (rt.root / bundle.id).exists()
    assert not cgroup_dirs(bundle.cgroups_path)


def test_preserve_fds_passes_fd_3_on(box: Box) -> None:
    bundle = box.sh("echo through-fd-3 >&3; ls /proc/self/fd")
    rt = box.runtime
    out = box.workdir / "fd3.txt"
    rt.ids.add(bundle.id)
    # The shell opens fd 3 on a host file and execs the runtime with it.
    result = run_captured(["sh", "-c", f'exec "$@" 3>{out}', "sh",
                           *rt.argv("run", "--preserve-fds", "1", "-b", str(bundle.path),
                                    bundle.id)])
    assert result.returncode == 0, result.describe()
    assert out.read_text() == "through-fd-3\n"
    # 0, 1, 2, 3 and the fd of ls's own directory listing: nothing else leaked in.
    assert sorted(int(fd) for fd in result.stdout.split()) == [0, 1, 2, 3, 4]


def test_pause_and_resume(box: Box) -> None:
    bundle = box.bundle(["sleep", "300"])
    rt = box.runtime
    rt.ids.add(bundle.id)
    rt("run", "-d", "-b", str(bundle.path), bundle.id).check()
    rt("pause", bundle.id).check()
    assert rt.state(bundle.id)["status"] == "paused"
    refused = rt("exec", bundle.id, "true")
    assert refused.returncode == 1 and "paused" in refused.stderr
    rt("resume", bundle.id).check()
    assert rt.state(bundle.id)["status"] == "running"
    rt("pause", bundle.id).check()
    rt("delete", "--force", bundle.id).check()  # thaws, kills, removes
    assert not cgroup_dirs(bundle.cgroups_path)


def test_no_signal_is_left_ignored_by_the_runtime(box: Box) -> None:
    # Python ignores SIGPIPE and SIGXFSZ; runc's processes start with nothing ignored.
    bundle = box.bundle(["sh", "-c", "grep SigIgn /proc/self/status; exec sleep 300"])
    rt = box.runtime
    rt.ids.add(bundle.id)
    out = box.workdir / "init.out"
    result = run_captured(["sh", "-c", f'exec "$@" > {out}', "sh",
                           *rt.argv("run", "-d", "-b", str(bundle.path), bundle.id)])
    assert result.returncode == 0, result.describe()
    deadline = time.monotonic() + 5
    while "SigIgn" not in out.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert out.read_text().split() == ["SigIgn:", "0000000000000000"]
    exec_out = rt("exec", bundle.id, "grep", "SigIgn", "/proc/self/status").check().stdout
    assert exec_out.split() == ["SigIgn:", "0000000000000000"]
    rt("delete", "--force", bundle.id).check()


def test_created_init_dies_on_sigterm_and_ignores_sigusr1_like_runc(box: Box) -> None:
    bundle = box.bundle(["sleep", "300"])
    rt = box.runtime
    pid_file = box.workdir / "init.pid"
    rt.create(bundle.id, bundle.path, pid_file).check()
    pid = int(pid_file.read_text())
    rt("kill", bundle.id, "USR1").check()
    time.sleep(0.2)
    assert rt.state(bundle.id)["status"] == "created"
    rt("kill", bundle.id, "TERM").check()
    # We are the init's subreaper (the runtime has exited): its status is ours to collect.
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2  # what runc's Go init exits with
    assert rt.state(bundle.id)["status"] == "stopped"
    rt("delete", bundle.id).check()


def test_tmpcopyup_fills_the_tmpfs_and_leaves_the_image_alone(box: Box) -> None:
    bundle = box.sh("grep ' /etc ' /proc/self/mountinfo | cut -d' ' -f9; cat /etc/group; "
                    "echo new > /etc/new")
    bundle.add_mount("/etc", "tmpfs", "tmpfs", ["tmpcopyup", "size=1m"])
    out = box.run_ok(bundle).splitlines()
    assert out[0] == "tmpfs" and "root:x:0:" in out
    assert not (bundle.rootfs / "etc" / "new").exists()


def _wait_for_the_inits_byte(fd: int) -> None:
    import fcntl
    import struct
    import termios

    deadline = time.monotonic() + 10
    while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0] == 0:
        assert time.monotonic() < deadline, "the init wrote nothing"
        time.sleep(0.001)


@pytest.mark.parametrize("reader_waits_for_the_byte", [False, True])
def test_a_stray_reader_of_the_exec_fifo_neither_kills_nor_starts_a_created_container(
        box: Box, reader_waits_for_the_byte: bool) -> None:
    # Anything may open and close files in the state directory (a backup, a scanner): the
    # init's open for writing then returns, and either its write fails with EPIPE (the reader
    # left at once) or its byte sits in the pipe unread (the reader left after it). Neither is
    # `start`: the container must stay created, and start later as usual.
    bundle = box.bundle(["sh", "-c", "echo started"])
    rt = box.runtime
    pid_file = box.workdir / "init.pid"
    rt.create(bundle.id, bundle.path, pid_file).check()
    pid = int(pid_file.read_text())
    fifo = rt.root / bundle.id / "exec.fifo"
    for _ in range(3):
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        if reader_waits_for_the_byte:
            _wait_for_the_inits_byte(fd)
        os.close(fd)
        time.sleep(0.1)
    assert pid_alive(pid), "the init died of, or ran the process for, a stray reader"
    assert rt.state(bundle.id)["status"] == "created"
    rt("start", bundle.id).check()
    rt.wait_status(bundle.id, "stopped")
    rt("delete", bundle.id).check()
