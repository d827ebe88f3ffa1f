"""The container lifecycle on real shims and pydesk-runc: create, start, wait, logs, stop,
kill, restart policies, remove (nothing left), live restore."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pydeskd.containerd.errors import NotFound
from pydeskd.daemon.containers.errors import Conflict, NotModified
from pydeskd.daemon.containers.state import Status
from pydeskd.daemon.logs import LogOptions, read_logs
from tests.integration.containers.conftest import IMAGE, Env, mounts_under

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_exists(env: Env, cid: str) -> bool:
    rel = f"{env.cgroup_parent.strip('/')}/{cid}"
    return any((h / rel).exists() for h in CGROUP_ROOT.iterdir())


def logs(env: Env, cid: str, **kw: object) -> str:
    c = env.service.get(cid)
    options = LogOptions(**kw)  # type: ignore[arg-type]
    return b"".join(e.data for e in read_logs(Path(c.log_path), options)).decode()


def test_run_wait_exit_code_and_logs(env: Env) -> None:
    svc = env.service
    c = svc.create("first", {"Image": IMAGE, "Cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
    assert c.state.status is Status.CREATED and c.name == "/first"
    with pytest.raises(NotFound, match="No such image: nope"):
        svc.create(None, {"Image": "nope"})
    svc.start("first")
    code, error = svc.wait("first", "not-running", timeout=30)
    assert (code, error) == (3, "")
    c = svc.get("first")
    assert c.state.status is Status.EXITED and c.state.exit_code == 3 and not c.state.running
    # two pipes: their relative order is not kept (in Docker neither)
    assert sorted(logs(env, c.id).splitlines()) == ["err", "out"]
    assert logs(env, c.id, stderr=False) == "out\n"
    assert env.events.actions(c.id) == ["create", "start", "die"]
    assert env.events.events[-1][3]["exitCode"] == "3"
    inspect = c.to_inspect()
    assert inspect["State"]["ExitCode"] == 3 and inspect["Config"]["Hostname"] == c.id[:12]
    assert inspect["Path"] == "sh" and inspect["Args"][0] == "-c"
    # it can start again, and its files are there
    svc.start(c.id)
    assert svc.wait(c.id, timeout=30)[0] == 3
    assert logs(env, c.id).count("out\n") == 2


def test_stop_with_timeout_kill_and_remove_cleans_everything(env: Env) -> None:
    svc = env.service
    # sh ignores SIGTERM as pid 1 without a handler: stop has to SIGKILL after the timeout
    c = svc.create(None, {"Image": IMAGE, "Cmd": ["sleep", "1000"]})
    svc.start(c.id)
    with pytest.raises(NotModified):
        svc.start(c.id)
    with pytest.raises(Conflict, match="container is running"):
        svc.remove(c.id)
    assert mounts_under(env.base) and cgroup_exists(env, c.id)
    t0 = time.monotonic()
    svc.stop(c.id, timeout=1)
    assert 0.9 < time.monotonic() - t0 < 10
    assert svc.get(c.id).state.exit_code == 137
    assert env.events.actions(c.id)[-4:] == ["kill", "kill", "die", "stop"]
    with pytest.raises(NotModified):
        svc.stop(c.id)
    svc.start(c.id)
    svc.kill(c.id, "SIGTERM")  # pid 1 ignores it
    time.sleep(0.3)
    assert svc.get(c.id).state.running
    svc.kill(c.id, "KILL")
    assert svc.wait(c.id, timeout=30)[0] == 137
    with pytest.raises(Conflict, match="is not running"):
        svc.kill(c.id)
    svc.remove(c.id)
    assert mounts_under(env.base) == []
    assert not cgroup_exists(env, c.id)
    assert not (env.paths.containers / c.id).exists()
    assert not env.paths.shim_state(c.id).exists()
    assert not env.paths.bundle(c.id).exists()
    with pytest.raises(NotFound):
        env.images.stores.snapshotter.stat(c.id)
    with pytest.raises(NotFound):
        svc.get(c.id)
    assert env.events.actions(c.id)[-1] == "destroy"


def test_force_remove_running(env: Env) -> None:
    svc = env.service
    c = svc.create("victim", {"Image": IMAGE, "Cmd": ["sleep", "1000"]})
    svc.start(c.id)
    svc.remove("victim", force=True)
    assert mounts_under(env.base) == [] and not cgroup_exists(env, c.id)
    assert svc.store.all() == []


def test_restart_always_after_the_process_is_killed(env: Env) -> None:
    svc = env.service
    c = svc.create(None, {"Image": IMAGE, "Cmd": ["sleep", "1000"]},
                   {"RestartPolicy": {"Name": "always"}})
    svc.start(c.id)
    first_pid = svc.get(c.id).state.pid
    os.kill(first_pid, 9)  # the process dies outside the daemon's control
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = svc.get(c.id)
        if now.state.is_running and now.state.pid != first_pid:
            break
        time.sleep(0.05)
    now = svc.get(c.id)
    assert now.state.is_running and now.state.pid != first_pid and now.restart_count == 1
    svc.stop(c.id, timeout=0)
    time.sleep(0.5)  # no restart after an explicit stop
    assert svc.get(c.id).state.status is Status.EXITED


def test_on_failure_limit_and_auto_remove(env: Env) -> None:
    svc = env.service
    c = svc.create(None, {"Image": IMAGE, "Cmd": ["false"]},
                   {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}})
    svc.start(c.id)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
            svc.get(c.id).restart_count == 2 and svc.get(c.id).state.status is Status.EXITED):
        time.sleep(0.05)
    assert svc.get(c.id).restart_count == 2 and svc.get(c.id).state.exit_code == 1
    rm = svc.create(None, {"Image": IMAGE, "Cmd": ["sh", "-c", "exit 5"]}, {"AutoRemove": True})
    svc.start(rm.id)
    assert svc.wait(rm.id, "removed", timeout=30)[0] == 5
    with pytest.raises(NotFound):
        svc.get(rm.id)


def test_live_restore(env: Env) -> None:
    svc = env.service
    loop = "while true; do echo tick; sleep 0.2; done"
    keep = svc.create("keep", {"Image": IMAGE, "Cmd": ["sh", "-c", loop]})
    svc.start(keep.id)
    gone = svc.create("gone", {"Image": IMAGE, "Cmd": ["sleep", "1000"]},
                      {"RestartPolicy": {"Name": "unless-stopped"}})
    svc.start(gone.id)
    pid = svc.get(keep.id).state.pid
    svc = env.reopen()  # the old object is dropped: its monitors no longer act
    os.kill(pid, 0)  # still running while no service follows it
    svc.restore()
    c = svc.get("keep")
    assert c.state.is_running and c.state.pid == pid
    old_gone_pid = svc.get("gone").state.pid
    os.kill(old_gone_pid, 9)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and svc.get("gone").state.pid in (old_gone_pid, 0):
        time.sleep(0.05)
    assert svc.get("gone").state.is_running  # unless-stopped came back
    assert "tick" in logs(env, c.id, tail=1)
    svc.stop("keep", timeout=1)
    assert not svc.get("keep").state.running


def test_restore_after_the_shim_died_records_the_exit_and_restarts(env: Env) -> None:
    import json
    import signal as sig

    svc = env.service
    plain = svc.create("plain", {"Image": IMAGE, "Cmd": ["sleep", "1000"]})
    svc.start(plain.id)
    always = svc.create("always", {"Image": IMAGE, "Cmd": ["sleep", "1000"]},
                        {"RestartPolicy": {"Name": "always"}})
    svc.start(always.id)
    victims = {}
    for c in (plain, always):
        state = env.paths.shim_state(c.id)
        victims[c.id] = (json.loads((state / "shim.json").read_text())["pid"],
                         svc.get(c.id).state.pid)
    svc.close()  # the daemon is "down"; its monitors must not act on what follows
    for shim_pid, init_pid in victims.values():
        os.kill(shim_pid, sig.SIGKILL)
        os.kill(init_pid, sig.SIGKILL)
    time.sleep(0.3)
    svc = env.reopen()
    assert svc.restore() == []
    p = svc.get("plain")
    assert p.state.status is Status.EXITED and p.state.exit_code == 255
    assert "die" in env.events.actions(p.id)
    a = svc.get("always")
    assert a.state.is_running and a.state.pid != victims[a.id][1]  # started again
    assert mounts_under(env.base) and len([m for m in mounts_under(env.base)
                                           if m.endswith("/rootfs")]) == 1
    svc.remove("always", force=True)
    svc.remove("plain")
    assert mounts_under(env.base) == []


def test_typed_config_from_the_api_layer(env: Env) -> None:
    from pydeskd.daemon.config_types import Config, HostConfig

    svc = env.service
    config = Config.from_api({"Image": IMAGE, "Cmd": ["sh", "-c", "echo $A; exit 2"],
                              "Env": ["A=typed"], "Labels": {"k": "v"}, "StopTimeout": 3})
    host = HostConfig.from_api({"RestartPolicy": {"Name": "no"},
                                "LogConfig": {"Type": "json-file",
                                              "Config": {"max-size": "1m", "max-file": "2"}}})
    c = svc.create("typed", config, host)
    assert c.config["Labels"] == {"k": "v"}
    assert c.host_config["LogConfig"]["Config"]["max-file"] == "2"
    svc.start(c.id)
    assert svc.wait(c.id, timeout=30)[0] == 2
    assert logs(env, c.id) == "typed\n"


def test_parallel_runs_leave_nothing_behind(env: Env) -> None:
    import threading

    svc = env.service
    errors: list[BaseException] = []
    codes: list[int] = []

    def worker(n: int) -> None:
        try:
            for i in range(3):
                c = svc.create(None, {"Image": IMAGE, "Cmd": ["sh", "-c", f"exit {n + i}"]},
                               {"AutoRemove": True})
                # As the CLI: the wait is set up before the start (the run may be removed
                # before a lookup made after it).
                block = svc.waiter(c.id, "removed")
                svc.start(c.id)
                codes.append(block(60)[0])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(codes) == sorted(n + i for n in range(8) for i in range(3))
    assert svc.store.all() == [] and mounts_under(env.base) == []
    assert list(env.paths.containers.iterdir()) == []
    assert list((env.paths.exec_root / "s").iterdir()) == []
    assert list((env.paths.exec_root / "containers").iterdir()) == []


def test_a_wait_set_up_before_a_fast_auto_remove_returns(env: Env) -> None:
    """The races behind 'still waiting for removed': the record looked up just before its
    removal must not get a fresh Live (never marked removed), and a waiter set up before the
    start sees the removal however fast it comes."""
    svc = env.service
    c = svc.create(None, {"Image": IMAGE, "Cmd": ["true"]}, {"AutoRemove": True})
    block = svc.waiter(c.id, "removed")
    svc.start(c.id)
    assert block(30) == (0, "")
    assert svc.live(c).removed  # the stale record: a detached Live, marked removed
    assert svc._live == {}  # and nothing re-entered in the table
    with pytest.raises(NotFound):
        svc.waiter(c.id, "removed")


def test_logs_follow_ends_when_the_container_stops(env: Env) -> None:
    svc = env.service
    c = svc.create(None, {"Image": IMAGE,
                          "Cmd": ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"]})
    svc.start(c.id)
    t0 = time.monotonic()
    got = b"".join(e.data for e in svc.logs(c.id, LogOptions(follow=True)))
    assert got == b"1\n2\n3\n" and time.monotonic() - t0 < 10
    stamped = [e.data for e in svc.logs(c.id, LogOptions(timestamps=True, tail=1))]
    assert len(stamped) == 1 and stamped[0].endswith(b"Z 3\n")
