"""ps / ps -a with filters and --format, label filters, inspect --format, top, stats
--no-stream and rename, through the docker CLI."""

from __future__ import annotations

import json

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import Pydeskd


def test_ps_filters_and_format(d: Pydeskd) -> None:
    up = out(d, "run", "-d", "--name", "up", "--label", "tier=web", "--label", "x",
             BUSYBOX, "sleep", "60")
    done = d.docker("run", "--name", "done", "--label", "tier=db", BUSYBOX, "sh", "-c",
                    "exit 2", check=False)
    assert (done.returncode, done.stdout) == (2, b"")
    created = out(d, "create", "--name", "fresh", BUSYBOX, "true")
    assert out(d, "ps", "-q") == up[:12]
    assert sorted(out(d, "ps", "-a", "--format", "{{.Names}}").split()) == \
        ["done", "fresh", "up"]
    assert out(d, "ps", "-a", "--filter", "status=exited", "--format",
               "{{.Names}} {{.Status}}").startswith("done Exited (2)")
    assert out(d, "ps", "-a", "--filter", "status=created", "-q") == created[:12]
    assert out(d, "ps", "-a", "--filter", "exited=2", "--format", "{{.Names}}") == "done"
    assert out(d, "ps", "-a", "--filter", "label=tier=web", "--format", "{{.Names}}") == "up"
    assert sorted(out(d, "ps", "-a", "--filter", "label=tier", "--format",
                      "{{.Names}}").split()) == ["done", "up"]
    assert out(d, "ps", "-a", "--filter", "label=x", "--filter", "label=tier=web",
               "--format", "{{.Names}}") == "up"
    assert out(d, "ps", "-a", "--filter", "name=fre", "--format", "{{.ID}}") == created[:12]
    assert out(d, "ps", "-a", "--filter", f"id={up[:8]}", "--format", "{{.Names}}") == "up"
    assert out(d, "ps", "--format", "{{.Image}}|{{.Command}}|{{.Label \"tier\"}}",
               "--no-trunc") == f'{BUSYBOX}|"sleep 60"|web'
    rows = [json.loads(line) for line in out(d, "ps", "-a", "--format", "json").splitlines()]
    assert {r["Names"]: r["State"] for r in rows} == \
        {"up": "running", "done": "exited", "fresh": "created"}
    assert out(d, "ps", "-a", "-n", "1", "--format", "{{.Names}}") == "fresh"
    bad = d.docker("ps", "--filter", "nosuch=1", check=False)
    assert bad.returncode != 0 and b"invalid filter 'nosuch'" in bad.stderr


def test_inspect_format(d: Pydeskd) -> None:
    cid = out(d, "run", "-d", "--name", "insp", "-e", "A=b", "--label", "k=v",
              "--restart", "on-failure:3", BUSYBOX, "sleep", "60")
    fmt = ("{{.Id}} {{.Name}} {{.State.Running}} {{.Config.Image}} {{index .Config.Labels "
           "\"k\"}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy."
           "MaximumRetryCount}} {{json .Config.Cmd}}")
    assert out(d, "inspect", "--format", fmt, "insp") == \
        f'{cid} /insp true {BUSYBOX} v on-failure 3 ["sleep","60"]'
    assert out(d, "container", "inspect", "-f", "{{.State.Pid}}", cid[:10]).isdigit()
    assert "A=b" in json.loads(out(d, "inspect", "insp"))[0]["Config"]["Env"]
    missing = d.docker("inspect", "nosuch", check=False)
    assert missing.returncode == 1 and b"No such object: nosuch" in missing.stderr


def test_top_stats_rename(d: Pydeskd) -> None:
    out(d, "run", "-d", "--name", "topped", BUSYBOX, "sh", "-c", "sleep 61 & sleep 62")
    top = out(d, "top", "topped")
    assert "PID" in top.splitlines()[0] and "sleep 61" in top and "sleep 62" in top
    assert "sleep 62" in out(d, "top", "topped", "-o", "pid,args")
    stats = out(d, "stats", "--no-stream", "--format",
                "{{.Name}} {{.PIDs}} {{.MemUsage}}", "topped")
    name, pids, mem = stats.split(" ", 2)
    # sh forks "sleep 61" and execs "sleep 62" (its last command): two processes.
    assert name == "topped" and int(pids) == 2 and "/" in mem
    out(d, "rename", "topped", "renamed")
    assert out(d, "ps", "--format", "{{.Names}}") == "renamed"
    assert d.docker("inspect", "topped", check=False).returncode == 1
    out(d, "run", "-d", "--name", "other", BUSYBOX, "sleep", "60")
    taken = d.docker("rename", "renamed", "other", check=False)
    assert taken.returncode == 1 and b"is already in use" in taken.stderr
