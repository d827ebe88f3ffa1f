"""docker update's pure parts: reading the body, dockerd's checks, and the cgroup write plan
for v1 and v2 (orders and conversions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.daemon.containers.update import (
    UpdateRequest,
    cgroup_writes,
    controller_dir,
    merged,
    write_cgroup,
)

MB = 1 << 20


def test_zero_and_null_fields_change_nothing() -> None:
    req = UpdateRequest.from_api({"Memory": 0, "CpuShares": 0, "CpusetCpus": "",
                                  "PidsLimit": None, "RestartPolicy": {"Name": ""}})
    assert req == UpdateRequest({})
    assert UpdateRequest.from_api({"PidsLimit": -1}).resources == {"PidsLimit": 0}
    with pytest.raises(InvalidArgument):
        UpdateRequest.from_api({"Memory": "64m"})


@pytest.mark.parametrize(("old", "body", "message"), [
    ({}, {"Memory": MB}, "Minimum memory limit allowed is 6MB"),
    ({"Memory": 64 * MB, "MemorySwap": 128 * MB}, {"Memory": 256 * MB},
     "update the memoryswap at the same time"),
    ({}, {"Memory": 64 * MB, "MemorySwap": 32 * MB}, "Minimum memoryswap limit"),
    ({}, {"MemorySwap": 32 * MB}, "always set the Memory limit"),
    ({"CpuPeriod": 100000}, {"NanoCpus": 10**9}, "Nano CPUs cannot be updated"),
    ({"NanoCpus": 10**9}, {"CpuQuota": 50000}, "NanoCPUs has already been set"),
    ({}, {"RestartPolicy": {"Name": "sometimes"}}, "invalid restart policy"),
])
def test_dockerd_refusals(old: dict[str, int], body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        merged(old, UpdateRequest.from_api(body))


def test_merge_keeps_other_fields_and_sets_policy() -> None:
    host = merged({"Memory": 64 * MB, "Privileged": False},
                  UpdateRequest.from_api({"PidsLimit": 50,
                                          "RestartPolicy": {"Name": "always"}}))
    assert host == {"Memory": 64 * MB, "Privileged": False, "PidsLimit": 50,
                    "RestartPolicy": {"Name": "always"}}


def test_v1_plan_orders_memory_writes_by_the_current_limit() -> None:
    req = UpdateRequest.from_api({"Memory": 64 * MB, "MemorySwap": 128 * MB})
    host = merged({}, req)
    shrinking = cgroup_writes(host, req, v2=False, current_limit=2**63 - 4096)
    assert [f for _, f, _ in shrinking] == ["memory.limit_in_bytes",
                                            "memory.memsw.limit_in_bytes"]
    growing = cgroup_writes(host, req, v2=False, current_limit=32 * MB)
    assert [f for _, f, _ in growing] == ["memory.memsw.limit_in_bytes",
                                          "memory.limit_in_bytes"]


def test_v1_and_v2_conversions() -> None:
    req = UpdateRequest.from_api({"NanoCpus": 1_500_000_000, "CpuShares": 1024,
                                  "PidsLimit": 0, "CpusetCpus": "0"})
    host = merged({}, req)
    assert cgroup_writes(host, req, v2=False) == [
        ("cpu", "cpu.shares", "1024"), ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "150000"), ("cpuset", "cpuset.cpus", "0"),
        ("pids", "pids.max", "max")]
    assert cgroup_writes(host, req, v2=True) == [
        ("", "cpu.weight", "39"), ("", "cpu.max", "150000 100000"),
        ("", "cpuset.cpus", "0"), ("", "pids.max", "max")]
    mem = UpdateRequest.from_api({"Memory": 64 * MB, "MemorySwap": 96 * MB})
    assert cgroup_writes(merged({}, mem), mem, v2=True) == [
        ("", "memory.max", str(64 * MB)), ("", "memory.swap.max", str(32 * MB))]


def test_controller_dirs_and_the_write_seam(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu,cpuacct" / "c1"
    cpu.mkdir(parents=True)
    (cpu / "cpu.shares").write_text("1024")
    dirs = {"cpu,cpuacct": cpu}
    assert controller_dir(dirs, "cpuacct") == cpu
    assert controller_dir({"": tmp_path}, "memory") == tmp_path
    write_cgroup(dirs, [("cpu", "cpu.shares", "512")])
    assert (cpu / "cpu.shares").read_text() == "512"
    with pytest.raises(InvalidArgument, match="no pids controller"):
        write_cgroup(dirs, [("pids", "pids.max", "5")])
    with pytest.raises(InvalidArgument, match=r"cpu\.cfs_quota_us"):
        write_cgroup(dirs, [("cpu", "cpu.cfs_quota_us", "5")])  # missing file: refused
