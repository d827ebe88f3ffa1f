"""docker events while other commands run: each lifecycle step, in order, with filters and
--format."""

from __future__ import annotations

import json
import subprocess
import time

from tests.integration.acceptance4.conftest import BUSYBOX, out
from tests.support.pydeskd import Pydeskd


def test_events_follow_the_commands(d: Pydeskd) -> None:
    since = str(int(time.time()) - 1)
    # --since: what happens before the watcher is connected is replayed, then it follows.
    watcher = d.popen_docker("events", "--since", since, "--filter", "type=container",
                             "--filter", "container=ev", "--format", "{{json .}}",
                             stdout=subprocess.PIPE)
    try:
        time.sleep(0.3)
        out(d, "create", "--name", "ev", "--label", "team=a", BUSYBOX, "sleep", "60")
        out(d, "start", "ev")
        out(d, "exec", "ev", "true")
        out(d, "pause", "ev")
        out(d, "unpause", "ev")
        out(d, "rename", "ev", "ev2")
        out(d, "kill", "ev2")
        out(d, "rm", "ev2")
        # an unrelated container is filtered out
        d.docker("run", "--rm", BUSYBOX, "true")
        until = str(int(time.time()) + 1)
        time.sleep(0.5)
    finally:
        watcher.terminate()
    lines, _ = watcher.communicate(timeout=10)
    events = [json.loads(line) for line in lines.decode().splitlines()]
    actions = [e["Action"] for e in events]
    # the "container=ev" filter matches by name at the time of the event (moby: the actor's
    # attributes), so the renamed container's later events are left out, as dockerd does.
    assert actions[:7] == ["create", "start", "exec_create: true", "exec_start: true",
                           "exec_die", "pause", "unpause"][:7], actions
    assert "rename" in actions
    assert all(e["Type"] == "container" and e["Actor"]["Attributes"]["image"] == BUSYBOX
               for e in events)
    assert events[0]["Actor"]["Attributes"]["team"] == "a"
    # The same history, replayed with --since/--until, and filtered by label.
    replay = out(d, "events", "--since", since, "--until", until, "--filter", "label=team=a",
                 "--format", "{{.Action}}").splitlines()
    assert replay[:2] == ["create", "start"] and replay[-1] == "destroy"
    assert "die" in replay and "kill" in replay
