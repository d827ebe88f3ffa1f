"""docker's less daily flags against a real pydeskd: run's --mount/--label/--hostname/-m/
--env-file/--read-only/--pull never, ps/images/volume ls/network ls --format and --filter,
logs --since, stop -s, exec -d, inspect --type, rmi --no-prune."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from tests.integration.cli.conftest import pydesk
from tests.support.pydeskd import Pydeskd

BUSYBOX = "busybox:latest"


def test_run_flags_reach_the_container(d: Pydeskd, tmp_path: Path) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello\n")
    env_file = tmp_path / "env"
    env_file.write_text("# settings\nGREETING=hi there\n\n")
    done = pydesk(d, "run", "--rm", "--mount", f"type=bind,source={site},target=/www,readonly",
                  "--mount", "type=volume,source=pdcli-mnt,target=/data",
                  "--mount", "type=tmpfs,target=/scratch", "--label", "pdcli=1",
                  "--hostname", "pdcli-host", "-m", "64m", "--env-file", str(env_file),
                  "--read-only", BUSYBOX, "sh", "-c",
                  "cat /www/index.html; hostname; echo $GREETING; touch /www/x 2>/dev/null "
                  "|| echo ro-bind; touch /root/x 2>/dev/null || echo ro-root; "
                  "touch /data/x /scratch/x && echo writable; "
                  "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes "
                  "2>/dev/null | head -1")
    assert done.stdout.splitlines() == ["hello", "pdcli-host", "hi there", "ro-bind", "ro-root",
                                        "writable", str(64 << 20)]
    assert "pdcli-mnt" in pydesk(d, "volume", "ls", "-q").stdout
    pydesk(d, "volume", "rm", "pdcli-mnt")


def test_run_pull_never_and_bad_flags_are_125(d: Pydeskd) -> None:
    done = pydesk(d, "run", "--rm", "--pull", "never", "pdcli-absent:1", "true", check=False)
    assert done.returncode == 125 and "No such image" in done.stderr
    assert "Unable to find image" not in done.stderr
    done = pydesk(d, "run", "--rm", "--mount", "type=bind,target=/x", BUSYBOX, check=False)
    assert done.returncode == 125 and "source is required" in done.stderr
    done = pydesk(d, "run", "--pull", "sometimes", BUSYBOX, check=False)
    assert done.returncode == 125 and "invalid pull option" in done.stderr


def test_listings_with_format_and_filter(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    pydesk(d, "run", "-d", "--name", "pdcli-fmt", "-l", "pdcli=yes", BUSYBOX, "sleep", "300")
    pydesk(d, "run", "-d", "--name", "pdcli-other", BUSYBOX, "sleep", "300")
    lines = pydesk(d, "ps", "--filter", "label=pdcli=yes", "--format",
                   "table {{.Names}}\\t{{.Labels}}\\t{{.State}}").stdout.splitlines()
    assert [line.split() for line in lines] == [["NAMES", "LABELS", "STATE"],
                                                ["pdcli-fmt", "pdcli=yes", "running"]]
    assert pydesk(d, "ps", "-l", "--format", "{{.Names}}").stdout == "pdcli-other\n"
    assert pydesk(d, "ps", "-n", "2", "--format", "{{.Names}}").stdout.split() == [
        "pdcli-other", "pdcli-fmt"]
    ident = pydesk(d, "ps", "-q", "--no-trunc", "--filter", "name=pdcli-fmt").stdout.strip()
    assert len(ident) == 64
    images = pydesk(d, "images", "--filter", "reference=busybox", "--format",
                    "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.split("\n")
    assert images[0].startswith("busybox:latest ") and len(images[0].split()[1]) == 12
    assert pydesk(d, "images", "--format", "{{.Nope}}", check=False).returncode == 1
    pydesk(d, "volume", "create", "--label", "pdcli=v", "pdcli-vol-a")
    pydesk(d, "volume", "create", "pdcli-vol-b")
    assert pydesk(d, "volume", "ls", "--filter", "label=pdcli=v", "--format",
                  "{{.Name}} {{.Driver}}").stdout == "pdcli-vol-a local\n"
    pydesk(d, "network", "create", "pdcli-net-f")
    lines = pydesk(d, "network", "ls", "--filter", "name=pdcli-net-f").stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert lines[1].split()[1:] == ["pdcli-net-f", "bridge", "local"]
    assert pydesk(d, "network", "ls", "--format", "{{.Name}}", "-f",
                  "name=pdcli-net-f").stdout == "pdcli-net-f\n"


def test_logs_since_stop_signal_exec_detach_inspect_type(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    # Traps SIGUSR1 (stop -s USR1 makes it exit 3 at once).
    pydesk(d, "run", "-d", "--name", "pdcli-sig2", BUSYBOX, "sh", "-c",
           "trap 'exit 3' USR1; echo early; while true; do sleep 0.1; done")
    time.sleep(1.5)
    pydesk(d, "exec", "-d", "pdcli-sig2", "sh", "-c", "echo late > /proc/1/fd/1")
    deadline = time.monotonic() + 10
    while "late" not in pydesk(d, "logs", "pdcli-sig2").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pydesk(d, "logs", "pdcli-sig2").stdout == "early\nlate\n"
    # --since/--until between the two lines' own timestamps (RFC 3339 from logs -t).
    stamps = [datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
              for line in pydesk(d, "logs", "-t", "pdcli-sig2").stdout.splitlines()]
    middle = f"{(stamps[0] + stamps[1]) / 2:.3f}"
    assert pydesk(d, "logs", "--since", middle, "pdcli-sig2").stdout == "late\n"
    assert pydesk(d, "logs", "--until", middle, "pdcli-sig2").stdout == "early\n"
    assert pydesk(d, "logs", "--since", "1h", "pdcli-sig2").stdout == "early\nlate\n"
    started = time.monotonic()
    assert pydesk(d, "stop", "-s", "USR1", "-t", "30", "pdcli-sig2").stdout == "pdcli-sig2\n"
    assert time.monotonic() - started < 10
    state = json.loads(pydesk(d, "inspect", "--type", "container", "pdcli-sig2").stdout)
    assert state[0]["State"]["ExitCode"] == 3
    done = pydesk(d, "inspect", "--type", "image", "pdcli-sig2", check=False)
    assert done.returncode == 1 and "No such object: pdcli-sig2" in done.stderr
    done = pydesk(d, "inspect", "--type", "thing", "pdcli-sig2", check=False)
    assert done.returncode == 1 and "is not a valid value for --type" in done.stderr
