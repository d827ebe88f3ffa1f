"""The desktop commands against real engines: the docker context used by the real docker CLI,
``pydesk context``, ``doctor`` (on a -H engine, and in passthrough), ``engine start|stop`` of a
native pydeskd at the passthrough socket (as root, cleaned up), ``open``/``port`` errors, and
``volume``/``network prune``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydesk.endpoint import NATIVE_SOCKET, ping_unix
from tests.integration.cli.conftest import PYDESK, env, pydesk
from tests.support.pydeskd import DOCKER, Pydeskd
from tests.support.registry import Registry

BUSYBOX = "busybox:latest"


def run(argv: list[str], environ: dict[str, str],
        stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=environ, capture_output=True, text=True, check=False,
                          timeout=120, stdin=stdin)


@pytest.fixture
def home() -> Iterator[Path]:
    """A short HOME (the VM socket's path must fit in sun_path) with DOCKER_CONFIG inside."""
    path = Path(tempfile.mkdtemp(prefix="pdh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def home_env(home: Path) -> dict[str, str]:
    return {**env(), "HOME": str(home), "DOCKER_CONFIG": str(home / "dockercfg")}


@pytest.fixture
def daemon_at_vm_socket(home: Path) -> Iterator[Pydeskd]:
    """A pydeskd listening on ~/.pydesk/run/docker.sock itself (where the VM's host proxy
    listens), no container run on it."""
    base = Path(tempfile.mkdtemp(prefix="pd-ctx-", dir="/tmp"))
    daemon = Pydeskd(base)
    daemon.socket = home / ".pydesk" / "run" / "docker.sock"
    daemon.socket.parent.mkdir(parents=True)
    with daemon:
        yield daemon
    shutil.rmtree(base, ignore_errors=True)


def test_docker_context_reaches_the_engine_on_pydesks_socket(daemon_at_vm_socket: Pydeskd,
                                                             home: Path) -> None:
    environ = home_env(home)
    vm_sock = daemon_at_vm_socket.socket
    done = run([str(PYDESK), "context", "docker"], environ)
    assert done.returncode == 0, done.stderr
    assert f"docker context pydesk -> unix://{vm_sock}" in done.stdout
    assert "docker --context pydesk ps" in done.stdout
    version = run([DOCKER, "--context", "pydesk", "version", "--format",
                   "{{.Server.Version}}"], environ)
    assert version.returncode == 0 and version.stdout.strip(), version.stderr
    listed = run([DOCKER, "context", "ls", "--format", "{{.Name}} {{.Current}}"], environ)
    assert "pydesk false" in listed.stdout and "default true" in listed.stdout
    # --use: every docker command goes to pydesk; other keys of config.json stay.
    config = home / "dockercfg" / "config.json"
    config.write_text('{"auths": {}, "psFormat": "{{.ID}}"}')
    assert run([str(PYDESK), "context", "docker", "--use"], environ).returncode == 0
    assert json.loads(config.read_text()) == {"auths": {}, "psFormat": "{{.ID}}",
                                              "currentContext": "pydesk"}
    assert run([DOCKER, "info", "--format", "{{.ServerVersion}}"], environ).returncode == 0
    # pydesk context: the engine (VM mode here: the socket under HOME) and the docker context.
    shown = run([str(PYDESK), "--mode", "vm", "context"], environ)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:2] == [
        f"engine: unix://{vm_sock} (vm)",
        f"why: mode vm (from --mode): vm {vm_sock} answers"]
    assert f"docker context pydesk: unix://{vm_sock}" in shown.stdout
    assert "docker's current context: pydesk" in shown.stdout
    removed = run([str(PYDESK), "context", "docker", "--remove"], environ)
    assert "current context is `default` again" in removed.stdout
    assert run([DOCKER, "context", "inspect", "pydesk"], environ).returncode != 0
    assert "currentContext" not in json.loads(config.read_text())


def test_doctor_on_a_flag_engine(d: Pydeskd) -> None:
    done = pydesk(d, "doctor", "--json")
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["engine", "engine version"]
    assert "(API 1." in report["checks"][1]["detail"]


def test_open_and_port_say_what_is_not_published(d: Pydeskd) -> None:
    pydesk(d, "pull", "-q", BUSYBOX)
    pydesk(d, "run", "-d", "--name", "pdcli-closed", BUSYBOX, "sleep", "300")
    done = pydesk(d, "open", "--print", "pdcli-closed", check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: pdcli-closed has no published port")
    done = pydesk(d, "port", "pdcli-closed", "80", check=False)
    assert (done.returncode, done.stderr) == (
        1, "Error: No public port '80/tcp' published for pdcli-closed\n")
    assert pydesk(d, "port", "pdcli-closed").stdout == ""


def test_volume_and_network_prune(d: Pydeskd) -> None:
    pydesk(d, "volume", "create", "pdcli-prune-v")
    pydesk(d, "network", "create", "pdcli-prune-n")
    # No confirmation (stdin closed): nothing removed.
    kept = pydesk(d, "volume", "prune", "--all")
    assert kept.stdout.startswith("WARNING! This will remove all local volumes not used by at "
                                  "least one container.\nAre you sure you want to continue?")
    assert "pdcli-prune-v" in pydesk(d, "volume", "ls", "-q").stdout
    done = pydesk(d, "volume", "prune", "--all", input=b"y\n")
    assert "Deleted Volumes:\npdcli-prune-v\n" in done.stdout
    assert done.stdout.rstrip().endswith("Total reclaimed space: 0B")
    assert "pdcli-prune-v" not in pydesk(d, "volume", "ls", "-q").stdout
    done = pydesk(d, "network", "prune", "-f")
    assert done.stdout.startswith("Deleted Networks:\n") and "pdcli-prune-n" in done.stdout
    assert "pdcli-prune-n" not in pydesk(d, "network", "ls").stdout
    assert "bridge" in pydesk(d, "network", "ls").stdout  # predefined networks stay


# --- passthrough: a native engine started by `pydesk engine start` ----------------------------

def _pids_naming(root: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if root in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (a subreaper above pytest reaps it, not us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.fixture
def native_roots(busybox_mirror: Registry) -> Iterator[tuple[Path, Path]]:
    """A data root in /tmp and the passthrough exec root (/run/pydesk, which must be free);
    afterwards: the daemon (if a test left it), its network objects, cgroups and directories."""
    from pydeskd.network.cleanup import teardown

    exec_root = NATIVE_SOCKET.parent
    assert not ping_unix(NATIVE_SOCKET), f"something already serves {NATIVE_SOCKET}"
    created = not exec_root.exists()
    base = Path(tempfile.mkdtemp(prefix="pd-native-", dir="/tmp"))
    data_root = base / "data"
    cgroup = f"pydesk-test-{hashlib.sha256(str(base).encode()).hexdigest()[:10]}"
    (base / "daemon.json").write_text(json.dumps({"registry-mirrors": [busybox_mirror.url],
                                                  "cgroup-parent": f"/{cgroup}"}))
    try:
        yield base, data_root
    finally:
        pidfile = exec_root / "pydeskd.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        for pid in _pids_naming(str(data_root)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        teardown(data_root, exec_root)
        for top in Path("/sys/fs/cgroup").glob(f"*/{cgroup}"):
            for directory in [*sorted(top.rglob("*"), key=lambda p: -len(p.parts)), top]:
                with contextlib.suppress(OSError):
                    directory.rmdir()
        if created:
            shutil.rmtree(exec_root, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def test_engine_start_doctor_in_passthrough_and_stop(native_roots: tuple[Path, Path],
                                                     home: Path) -> None:
    base, data_root = native_roots
    environ = home_env(home)
    pd = [str(PYDESK)]
    start = [*pd, "engine", "start", "--data-root", str(data_root),
             "--config-file", str(base / "daemon.json")]
    # No engine: commands say so, with the hint to start one.
    done = run([*pd, "ps"], environ)
    assert done.returncode == 1 and "hint: start the native engine: `sudo pydesk engine " \
                                      "start`" in done.stderr
    # Without a terminal and without --yes, nothing starts.
    done = run(start, environ)
    assert done.returncode == 1 and "pydesk engine start --yes" in done.stderr
    assert not ping_unix(NATIVE_SOCKET)
    # A daemon that cannot start: its own error, from this run's log.
    (base / "bad.json").write_text('{"pdcli-bogus": 1}')
    done = run([*start[:-1], str(base / "bad.json"), "--yes"], environ)
    assert done.returncode == 1 and done.stderr.startswith("error: pydeskd exited at once:\n")
    assert "pdcli-bogus" in done.stderr
    done = run([*start, "--yes"], environ)
    assert done.returncode == 0, done.stderr
    assert f"answers on unix://{NATIVE_SOCKET}" in done.stdout
    assert "already answers" in run([*start, "--yes"], environ).stdout
    # Passthrough is chosen automatically; doctor passes and says why.
    assert run([*pd, "ps"], environ).stdout.startswith("CONTAINER ID")
    shown = run([*pd, "context"], environ)
    assert shown.stdout.startswith(f"engine: unix://{NATIVE_SOCKET} (native)")
    doctor = run([*pd, "doctor", "--json"], environ)
    report = json.loads(doctor.stdout)
    assert doctor.returncode == 0 and report["ok"] is True, doctor.stdout
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert verdicts == {"engine": "ok", "native socket": "ok", "pydeskd version": "ok",
                        "VM": "skip"}
    text = run([*pd, "doctor"], environ).stdout
    assert "[ok]   native socket" in text and text.rstrip().endswith("all checks passed")
    # Stop: the daemon goes, its pidfile and socket too; a second stop has nothing to do.
    pid = int((NATIVE_SOCKET.parent / "pydeskd.pid").read_text())
    done = run([*pd, "engine", "stop"], environ)
    assert done.stdout == f"pydeskd (pid {pid}) stopped\n", done.stderr
    assert not ping_unix(NATIVE_SOCKET) and gone(pid)
    assert run([*pd, "engine", "stop"], environ).stdout == "no native engine runs\n"
    doctor = run([*pd, "doctor"], environ)
    assert doctor.returncode == 1
    assert "[FAIL] native socket" in doctor.stdout
    assert "fix: start the native engine: sudo pydesk engine start" in doctor.stdout


def test_pull_progress_per_layer_plain_and_on_a_terminal(d: Pydeskd) -> None:
    import re

    from tests.support.terminal import read_until, under_pty

    pydesk(d, "rmi", "-f", BUSYBOX, check=False)
    done = pydesk(d, "pull", BUSYBOX)
    lines = done.stderr.splitlines()
    assert lines[0] == "latest: Pulling from busybox"
    assert any(re.fullmatch(r"[0-9a-f]{12}: Pull complete", line) for line in lines), lines
    assert lines[-2].startswith("Digest: sha256:")
    assert lines[-1] == "Status: Downloaded newer image for busybox:latest"
    # run of a missing image on a terminal: one bar per layer, as docker's.
    pydesk(d, "rmi", "-f", BUSYBOX)
    with under_pty([str(PYDESK), "-H", d.host, "run", "--rm", BUSYBOX, "echo", "ran"],
                   env()) as (_, fd):
        shown = read_until(fd, b"ran\r\n", 60)
    assert b"Unable to find image 'busybox:latest' locally" in shown
    assert re.search(rb"[0-9a-f]{12}: Pull complete \x1b\[[0-9;]*m\xe2\x94\x81", shown), shown
    assert b"Status: Downloaded newer image for busybox:latest" in shown


def test_vm_mode_doctor_and_port_show_the_forwarders_failures(d: Pydeskd, home: Path) -> None:
    """The VM's host socket stood in for by a real pydeskd (no VM here): doctor's VM checks run
    their real probes; a forward the forwarder reported failed shows in doctor and port."""
    pydesk_home = home / "ph"
    environ = {**home_env(home), "PYDESK_HOME": str(pydesk_home)}
    vm_sock = pydesk_home / "run" / "docker.sock"
    vm_sock.parent.mkdir(parents=True)
    vm_sock.symlink_to(d.socket)
    pydesk(d, "pull", "-q", BUSYBOX)
    pydesk(d, "run", "-d", "--name", "pdcli-fwd", "-p", "127.0.0.1:1:80", BUSYBOX,
           "sleep", "300")
    instance = pydesk_home / "default"
    instance.mkdir()
    (instance / "forwards.json").write_text(json.dumps([
        {"proto": "tcp", "host_ip": "127.0.0.1", "host_port": 1, "container": "pdcli-fwd",
         "error": "host port 1 is already in use"}]))
    vm = [str(PYDESK), "--mode", "vm"]
    port = run([*vm, "port", "pdcli-fwd"], environ)
    assert port.stdout == "80/tcp -> 127.0.0.1:1\n"
    assert port.stderr == ("warning: host port 1/tcp is not forwarded: host port 1 is already "
                           "in use\n")
    doctor = run([*vm, "doctor", "--json"], environ)
    report = json.loads(doctor.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert doctor.returncode == 1 and report["ok"] is False
    assert checks["engine"]["verdict"] == "ok" and "(vm)" in checks["engine"]["detail"]
    assert checks["qemu"]["verdict"] == "ok" and "QEMU emulator version" in checks["qemu"][
        "detail"]
    assert checks["VM instance"]["verdict"] == "fail"  # no config.json: never started
    assert checks["host socket"]["verdict"] == "ok"
    assert checks["docker context"]["verdict"] == "warn"
    assert checks["port 127.0.0.1:1/tcp"]["detail"] == (
        "container pdcli-fwd: host port 1 is already in use")
    assert "native socket" not in checks


def test_engine_start_and_stop_say_root_is_needed(home: Path) -> None:
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    environ = {**home_env(home), "HOME": "/nonexistent"}
    done = run([*nobody, str(PYDESK), "engine", "start", "--yes"], environ)
    assert (done.returncode, done.stderr) == (
        1, "error: the native engine runs as root (namespaces, mounts, cgroups)\n"
           "hint: sudo pydesk engine start\n")
    assert not ping_unix(NATIVE_SOCKET)
