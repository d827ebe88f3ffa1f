"""Conformance: the container process (args, env, cwd, user, umask, capabilities, rlimits,
NoNewPrivs, oom_score_adj, exit codes) is what config.json asks for, under runc and pydesk-runc."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.support.conformance import Box


def status_field(status: str, key: str) -> str:
    """One field of /proc/self/status, e.g. CapEff."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    raise AssertionError(f"{key} not in /proc/self/status:\n{status}")


CAP_BITS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_KILL": 5, "CAP_SETGID": 6,
            "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18}


def mask(*caps: str) -> str:
    return f"{sum(1 << CAP_BITS[c] for c in caps):016x}"


def test_args_are_passed_verbatim(box: Box) -> None:
    bundle = box.bundle(["echo", "one", "two words", "$HOME", "*"])
    assert box.run_ok(bundle) == "one two words $HOME *\n"


def test_env_is_exactly_the_configured_list(box: Box) -> None:
    bundle = box.bundle(["env"])
    bundle.config["process"]["env"] = ["PATH=/bin", "FOO=bar baz", "EMPTY="]
    lines = sorted(box.run_ok(bundle).splitlines())
    # HOME is the one variable a runtime may add (runc sets it from /etc/passwd when absent).
    assert [line for line in lines if not line.startswith("HOME=")] == [
        "EMPTY=", "FOO=bar baz", "PATH=/bin"]


def test_cwd_is_created_and_entered(box: Box) -> None:
    bundle = box.bundle(["pwd"])
    bundle.config["process"]["cwd"] = "/work/dir"
    assert box.run_ok(bundle) == "/work/dir\n"


def test_user_uid_gid_and_additional_gids(box: Box) -> None:
    bundle = box.bundle(["id"])
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [5, 2000]}
    out = box.run_ok(bundle).strip()
    assert out.startswith("uid=1000 gid=1001 groups=")
    groups = {g.split("(")[0] for g in out.split("groups=")[1].split(",")}
    assert groups == {"5", "2000"}, out


def test_umask(box: Box) -> None:
    bundle = box.sh("umask; touch /tmp/f; stat -c %a /tmp/f")
    bundle.config["process"]["user"]["umask"] = 0o027
    assert box.run_ok(bundle) == "0027\n640\n"


def test_hostname(box: Box) -> None:
    bundle = box.bundle(["hostname"])
    bundle.config["hostname"] = "conformance-host"
    assert box.run_ok(bundle) == "conformance-host\n"


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_capabilities_of_root_process(box: Box, no_new_privileges: bool) -> None:
    # uid 0: execve computes permitted = bounding | inheritable | ambient (the kernel treats
    # root as having full file capabilities) and effective = permitted; with NoNewPrivs the
    # new permitted set is capped to the old one (the configured permitted set). Bounding,
    # inheritable and ambient are kept as configured.
    bundle = box.bundle(["cat", "/proc/self/status"])
    bundle.config["process"]["noNewPrivileges"] = no_new_privileges
    bundle.config["process"]["capabilities"] = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        # Inheritable must stay within bounding: capset refuses more without CAP_SETPCAP.
        "inheritable": ["CAP_KILL", "CAP_SETUID"],
        "ambient": ["CAP_KILL"],
    }
    status = box.run_ok(bundle)
    assert status_field(status, "CapBnd") == mask("CAP_CHOWN", "CAP_KILL",
                                                  "CAP_NET_BIND_SERVICE", "CAP_SETUID")
    assert status_field(status, "CapInh") == mask("CAP_KILL", "CAP_SETUID")
    assert status_field(status, "CapAmb") == mask("CAP_KILL")
    if no_new_privileges:
        expected = mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    else:
        expected = mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID")
    assert status_field(status, "CapPrm") == expected
    assert status_field(status, "CapEff") == expected


def test_capabilities_of_non_root_process(box: Box) -> None:
    # uid 1000 and no file capabilities: execve keeps only the ambient set in permitted and
    # effective; inheritable and bounding are kept as configured.
    bundle = box.bundle(["cat", "/proc/self/status"])
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["process"]["capabilities"] = {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT"],
        "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }
    status = box.run_ok(bundle)
    assert status_field(status, "CapBnd") == mask("CAP_CHOWN", "CAP_KILL",
                                                  "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT")
    assert status_field(status, "CapInh") == mask("CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert status_field(status, "CapAmb") == mask("CAP_NET_BIND_SERVICE")
    assert status_field(status, "CapPrm") == mask("CAP_NET_BIND_SERVICE")
    assert status_field(status, "CapEff") == mask("CAP_NET_BIND_SERVICE")


def test_no_capabilities_at_all(box: Box) -> None:
    bundle = box.bundle(["cat", "/proc/self/status"])
    bundle.config["process"]["capabilities"] = {k: [] for k in
                                                ("bounding", "effective", "permitted",
                                                 "inheritable", "ambient")}
    status = box.run_ok(bundle)
    for key in ("CapBnd", "CapInh", "CapAmb", "CapPrm", "CapEff"):
        assert status_field(status, key) == "0" * 16, key


def test_rlimits(box: Box) -> None:
    bundle = box.sh("ulimit -Sn; ulimit -Hn; ulimit -Ss; ulimit -Hs")
    bundle.config["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 777},
        {"type": "RLIMIT_STACK", "soft": 4 * 1024 * 1024, "hard": 16 * 1024 * 1024},
    ]
    assert box.run_ok(bundle).split() == ["512", "777", "4096", "16384"]


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_no_new_privs(box: Box, no_new_privileges: bool) -> None:
    bundle = box.bundle(["cat", "/proc/self/status"])
    bundle.config["process"]["noNewPrivileges"] = no_new_privileges
    assert status_field(box.run_ok(bundle), "NoNewPrivs") == ("1" if no_new_privileges else "0")


# Not negative: lowering the score needs CAP_SYS_RESOURCE, which this machine's root lacks.
@pytest.mark.parametrize("score", [500, 1000])
def test_oom_score_adj(box: Box, score: int) -> None:
    bundle = box.bundle(["cat", "/proc/self/oom_score_adj"])
    bundle.config["process"]["oomScoreAdj"] = score
    assert box.run_ok(bundle) == f"{score}\n"


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_is_passed_through(box: Box, code: int) -> None:
    bundle = box.sh(f"echo out; echo err >&2; exit {code}")
    result = box.run(bundle)
    assert (result.returncode, result.stdout, result.stderr) == (code, "out\n", "err\n")


def test_death_by_signal_exits_128_plus_n(box: Box) -> None:
    # The init of a pid namespace ignores signals it has no handler for, even SIGKILL sent
    # from inside; a SIGKILL from the runtime (outside) is always delivered.
    bundle = box.bundle(["sleep", "60"])
    bundle.write()
    runner = subprocess.Popen(box.runtime.argv("run", "--bundle", str(bundle.path), bundle.id),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    box.runtime.ids.add(bundle.id)
    try:
        deadline = time.monotonic() + 15
        while '"running"' not in box.runtime("state", bundle.id).stdout:
            assert time.monotonic() < deadline, "container never reached running"
            assert runner.poll() is None, f"run exited early with {runner.returncode}"
            time.sleep(0.05)
        box.runtime("kill", bundle.id, "KILL").check()
        assert runner.wait(timeout=15) == 128 + 9
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(timeout=15)
