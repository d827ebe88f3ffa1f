"""Conformance: linux.resources (memory, pids, cpu) are enforced through the container's cgroup,
on cgroup v1 or v2 alike, and linux.seccomp denies what the profile denies."""

from __future__ import annotations

from tests.support.conformance import Box
from tests.support.runtimes import cgroup_hierarchies

MIB = 1024 * 1024


def test_memory_limit_oom_kills(box: Box) -> None:
    # Doubling a shell variable reaches ~128 MiB after 27 rounds: far over a 32 MiB limit.
    bundle = box.sh("x=0123456789abcdef; i=0; while [ $i -lt 27 ]; do x=$x$x; i=$((i+1)); "
                    "done; echo survived ${#x}")
    bundle.config["linux"]["resources"]["memory"] = {"limit": 32 * MIB, "swap": 32 * MIB}
    result = box.run(bundle, timeout=60)
    assert result.returncode == 128 + 9, result.describe()
    assert "survived" not in result.stdout


def test_memory_limit_leaves_room_below_it(box: Box) -> None:
    # The same program, stopping at ~4 MiB, fits in 32 MiB: the limit is not "kill always".
    bundle = box.sh("x=0123456789abcdef; i=0; while [ $i -lt 18 ]; do x=$x$x; i=$((i+1)); "
                    "done; echo survived ${#x}")
    bundle.config["linux"]["resources"]["memory"] = {"limit": 32 * MIB, "swap": 32 * MIB}
    assert box.run_ok(bundle) == f"survived {16 << 18}\n"


def test_memory_and_cpu_values_reach_the_cgroup(box: Box) -> None:
    # Read inside, through the container's own cgroup mount, in whichever layout this is.
    bundle = box.sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                    "/sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
                    "/sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/pids/pids.max "
                    "2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.weight "
                    "/sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max")
    bundle.config["linux"]["resources"]["memory"] = {"limit": 48 * MIB}
    bundle.config["linux"]["resources"]["cpu"] = {"shares": 512, "quota": 50000,
                                                  "period": 100000}
    bundle.config["linux"]["resources"]["pids"] = {"limit": 42}
    bundle.config["linux"]["namespaces"].append({"type": "cgroup"})
    out = box.run_ok(bundle).split()
    if len(cgroup_hierarchies()) > 1:  # v1 controllers (hybrid or legacy)
        assert out == [str(48 * MIB), "512", "50000", "100000", "42"]
    else:
        # runc's shares -> weight conversion: 1 + ((shares - 2) * 9999) / 262142.
        assert out == [str(48 * MIB), str(1 + (512 - 2) * 9999 // 262142), "50000", "100000",
                       "42"]


def test_pids_limit_caps_a_fork_loop(box: Box) -> None:
    # The shell itself is one of the 8 pids: at most 7 sleeps start, then fork fails.
    bundle = box.sh("i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); echo started $i; done")
    bundle.config["linux"]["resources"]["pids"] = {"limit": 8}
    result = box.run(bundle, timeout=60)
    started = [line for line in result.stdout.splitlines() if line.startswith("started")]
    assert len(started) <= 7, result.describe()
    assert "can't fork" in result.stderr, result.describe()
    assert result.returncode != 0


SECCOMP_DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
}


def test_seccomp_denied_syscall_returns_eperm(box: Box) -> None:
    bundle = box.sh("touch /tmp/file && echo touched; mkdir /tmp/dir; echo mkdir=$?")
    bundle.config["linux"]["seccomp"] = SECCOMP_DENY_MKDIR
    result = box.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "touched\nmkdir=1\n"
    assert "Operation not permitted" in result.stderr
    assert not (bundle.rootfs / "tmp" / "dir").exists()
    assert (bundle.rootfs / "tmp" / "file").exists()


def test_seccomp_errno_ret_is_honoured(box: Box) -> None:
    bundle = box.sh("mkdir /tmp/dir; echo mkdir=$?")
    bundle.config["linux"]["seccomp"] = {
        **SECCOMP_DENY_MKDIR,
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 28}],
    }
    result = box.run(bundle)
    assert result.stdout == "mkdir=1\n", result.describe()
    assert "No space left on device" in result.stderr
