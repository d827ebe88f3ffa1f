"""Exec, attach, top, stats, list, pause, rename on real containers."""

from __future__ import annotations

import threading
import time

import pytest

from pydeskd.daemon.containers.errors import Conflict
from pydeskd.daemon.containers.filters import ListOptions
from pydeskd.shim.protocol import Stream
from tests.integration.containers.conftest import IMAGE, Env


def test_exec_output_and_exit_code(env: Env) -> None:
    svc = env.service
    c = svc.create(None, {"Image": IMAGE, "Cmd": ["sleep", "1000"], "Env": ["FROM_CFG=1"]})
    with pytest.raises(Conflict, match="is not running"):
        svc.exec_create(c.id, ["true"])
    svc.start(c.id)
    eid = svc.exec_create(c.id, ["sh", "-c", "echo $FROM_CFG $X; id -u; pwd; echo e >&2; exit 7"],
                          env=["X=2"], user="nobody", workdir="/tmp")
    assert svc.exec_inspect(eid)["Running"] is False
    attachment = svc.exec_start(eid)
    assert attachment is not None
    out = b"".join(attachment.output())
    attachment.close()
    # without a tty: Docker's multiplexed frames, one per chunk
    frames = []
    while out:
        stream, size = out[0], int.from_bytes(out[4:8], "big")
        frames.append((stream, out[8:8 + size]))
        out = out[8 + size:]
    stdout = b"".join(d for s, d in frames if s == Stream.STDOUT).decode()
    assert stdout == "1 2\n65534\n/tmp\n"
    assert b"".join(d for s, d in frames if s == Stream.STDERR) == b"e\n"
    assert svc.execs.wait(eid, timeout=10) == 7
    info = svc.exec_inspect(eid)
    assert info["ExitCode"] == 7 and not info["Running"] and info["ContainerID"] == c.id
    assert svc.inspect(c.id)["ExecIDs"] == [eid]
    with pytest.raises(Conflict, match="already run"):
        svc.exec_start(eid)
    detached = svc.exec_create(c.id, ["sh", "-c", "exit 4"])
    assert svc.exec_start(detached, detach=True) is None
    assert svc.execs.wait(detached, timeout=10) == 4


def test_attach_before_start_gets_all_output_and_stdin(env: Env) -> None:
    svc = env.service
    c = svc.create(None, {"Image": IMAGE, "Cmd": ["sh", "-c", "echo hello; read x; echo got $x"],
                          "OpenStdin": True, "StdinOnce": True, "AttachStdin": True})
    got: list[bytes] = []
    attached = threading.Event()

    def attach() -> None:
        a = svc.attach(c.id, stdin=True, timeout=30)
        attached.set()
        a.send(b"world\n")
        a.close_stdin()
        got.extend(a.output())
        a.close()

    t = threading.Thread(target=attach)
    t.start()
    time.sleep(0.2)  # the attacher is waiting for the start
    svc.start(c.id)
    t.join(30)
    assert attached.is_set()
    out = b"".join(got)
    assert b"hello\n" in out and b"got world\n" in out
    assert svc.wait(c.id, timeout=10)[0] == 0


def test_top_stats_list_pause_rename(env: Env) -> None:
    svc = env.service
    c = svc.create("lister", {"Image": IMAGE, "Cmd": ["sleep", "1000"],
                              "Labels": {"team": "a"}}, {"Memory": 64 << 20})
    stopped = svc.create(None, {"Image": IMAGE, "Cmd": ["true"]})
    svc.start(c.id)
    top = svc.top(c.id)
    assert "PID" in top["Titles"] and len(top["Processes"]) == 1
    assert "sleep 1000" in top["Processes"][0][-1]
    stats = svc.stats(c.id)
    assert stats["memory_stats"]["limit"] == 64 << 20
    assert stats["memory_stats"]["usage"] > 0 and stats["pids_stats"]["current"] == 1
    rows = svc.list(ListOptions())
    assert [r["Names"] for r in rows] == [["/lister"]]
    assert rows[0]["Status"].startswith("Up ") and rows[0]["State"] == "running"
    everything = svc.list(ListOptions(all=True), size=True)
    assert {r["Id"] for r in everything} == {c.id, stopped.id}
    assert all("SizeRw" in r for r in everything)
    assert [r["Id"] for r in svc.list(ListOptions(filters={"label": ["team=a"]}))] == [c.id]
    assert [r["Id"] for r in svc.list(ListOptions(filters={"ancestor": [IMAGE]}))] == [c.id]
    svc.pause(c.id)
    assert svc.get(c.id).state.paused
    assert svc.list(ListOptions())[0]["Status"].endswith("(Paused)")
    with pytest.raises(Conflict):
        svc.exec_create(c.id, ["true"])
    svc.unpause(c.id)
    svc.rename("lister", "renamed")
    assert svc.get("renamed").id == c.id
    assert svc.counts().running == 1 and svc.counts().total == 2
    svc.stop(c.id, timeout=0)
    pruned = svc.prune()
    assert set(pruned["ContainersDeleted"]) == {c.id, stopped.id}
    assert svc.store.all() == []


def test_healthchecks(env: Env) -> None:
    svc = env.service
    fast = {"Interval": 100_000_000, "Timeout": 2_000_000_000, "Retries": 2}
    good = svc.create(None, {"Image": IMAGE, "Cmd": ["sleep", "1000"],
                             "Healthcheck": {"Test": ["CMD-SHELL", "echo ok"], **fast}})
    bad = svc.create(None, {"Image": IMAGE, "Cmd": ["sleep", "1000"],
                            "Healthcheck": {"Test": ["CMD", "false"], **fast}})
    slow = svc.create(None, {"Image": IMAGE, "Cmd": ["sleep", "1000"],
                             "Healthcheck": {"Test": ["CMD", "true"]}})  # every 30 s
    svc.start(slow.id)
    assert svc.get(slow.id).state.health == {"Status": "starting", "FailingStreak": 0,
                                             "Log": []}
    svc.start(good.id)
    svc.start(bad.id)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
            (svc.get(good.id).state.health or {}).get("Status") == "healthy"
            and (svc.get(bad.id).state.health or {}).get("Status") == "unhealthy"):
        time.sleep(0.05)
    g = svc.get(good.id).state.health or {}
    b = svc.get(bad.id).state.health or {}
    assert g["Status"] == "healthy" and g["Log"][-1]["Output"] == "ok\n"
    assert b["Status"] == "unhealthy" and b["FailingStreak"] >= 2
    assert "health_status: healthy" in env.events.actions(good.id)
    assert "health_status: unhealthy" in env.events.actions(bad.id)
    assert svc.inspect(good.id)["State"]["Health"]["Status"] == "healthy"
    assert "(healthy)" in svc.list(ListOptions(filters={"id": [good.id]}))[0]["Status"]
    svc.stop(good.id, timeout=0)
    svc.remove(bad.id, force=True)
    svc.remove(slow.id, force=True)
