"""Conformance: bad bundles fail with a clear message and leave the host as it was: no state
directory, no cgroup, no mount, no process, no file written outside the bundle.

For a mount destination that is a symlink leading out of the rootfs, refusing is fine and so is
mounting at the symlink's target resolved *inside* the rootfs (runc does the latter); the host
path the symlink names must never be touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.conformance import Box, Bundle
from tests.support.runtimes import Result, cgroup_dirs, cgroup_pids, mounts_mentioning


def assert_nothing_left(box: Box, bundle: Bundle) -> None:
    """After a failed create: no trace of the container on the host."""
    state = box.runtime("state", bundle.id)
    assert state.returncode != 0, f"the runtime still knows the container:\n{state.describe()}"
    assert not (box.runtime.root / bundle.id).exists(), "state directory left behind"
    assert not cgroup_pids(bundle.cgroups_path), "processes left behind"
    assert not cgroup_dirs(bundle.cgroups_path), "cgroup directory left behind"
    assert not mounts_mentioning([str(bundle.path)]), "mount left behind"


def create_fails(box: Box, bundle: Bundle) -> Result:
    result = box.runtime.create(bundle.id, bundle.path).check_failed_clearly()
    assert_nothing_left(box, bundle)
    return result


def test_config_that_is_not_json(box: Box) -> None:
    bundle = box.bundle(["true"])
    (bundle.path / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    create_fails(box, bundle)


def test_missing_config(box: Box) -> None:
    bundle = box.bundle(["true"])
    (bundle.path / "config.json").unlink()
    create_fails(box, bundle)


@pytest.mark.parametrize("where, value", [
    (("process", "args"), "echo not-a-list"),
    (("process", "user", "uid"), "zero"),
    (("process", "env"), {"PATH": "/bin"}),
    (("root",), "rootfs"),
    (("mounts",), {"destination": "/x"}),
    (("linux", "namespaces"), "pid"),
])
def test_config_with_wrong_types(box: Box, where: tuple[str, ...], value: Any) -> None:
    bundle = box.bundle(["true"])
    node = bundle.config
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    # write_config would be fine too; spelled out so the file on disk is unmistakable.
    (bundle.path / "config.json").write_text(json.dumps(bundle.config))
    create_fails(box, bundle)


def test_missing_rootfs(box: Box) -> None:
    bundle = box.bundle(["true"])
    bundle.config["root"]["path"] = "no-such-rootfs"
    bundle.write()
    create_fails(box, bundle)


def test_missing_process_binary(box: Box) -> None:
    bundle = box.bundle(["/bin/no-such-program"])
    result = box.runtime.run(bundle.id, bundle.path).check_failed_clearly()
    assert "no-such-program" in result.stderr, result.describe()
    assert_nothing_left(box, bundle)


def test_unknown_namespace_type(box: Box) -> None:
    bundle = box.bundle(["true"])
    bundle.config["linux"]["namespaces"].append({"type": "hyperspace"})
    bundle.write()
    create_fails(box, bundle)


def test_relative_cwd(box: Box) -> None:
    bundle = box.bundle(["true"])
    bundle.config["process"]["cwd"] = "relative/dir"
    bundle.write()
    create_fails(box, bundle)


def test_relative_mount_destination_is_refused_or_confined(box: Box) -> None:
    src = box.host_dir("src")
    bundle = box.sh("cat /rel/dest/probe")
    (src / "probe").write_text("through\n")
    bundle.add_bind(src, "rel/dest")
    bundle.write()
    result = box.runtime.run(bundle.id, bundle.path)
    if result.returncode != 0:
        result.check_failed_clearly()
    else:
        # Accepted: it must have been taken relative to the container's root.
        assert result.stdout == "through\n", result.describe()
    assert not mounts_mentioning([str(bundle.path), str(src)])
    assert not Path("rel/dest").exists()


@pytest.mark.parametrize("link", ["absolute", "dotdot"])
def test_symlinked_mount_destination_stays_inside_rootfs(box: Box, link: str) -> None:
    target = box.host_dir("target")  # on the host, what the symlink names
    (target / "sentinel").write_text("host\n")
    source = box.host_dir("source")
    (source / "from-source").write_text("source\n")
    bundle = box.sh("ls /evil; touch /evil/written-inside")
    if link == "absolute":
        (bundle.rootfs / "evil").symlink_to(target)
    else:
        (bundle.rootfs / "evil").symlink_to("../" * 20 + str(target).lstrip("/"))
    bundle.add_bind(source, "/evil")
    bundle.write()

    result = box.runtime.run(bundle.id, bundle.path)
    if result.returncode != 0:
        result.check_failed_clearly()
    else:
        # Confined: the mount landed on the target resolved inside the rootfs, so the
        # container saw the source and wrote into it.
        assert result.stdout == "from-source\n", result.describe()
        assert (source / "written-inside").exists()
        assert (bundle.rootfs / str(target).lstrip("/")).is_dir()
    assert sorted(p.name for p in target.iterdir()) == ["sentinel"], "host directory changed"
    assert (target / "sentinel").read_text() == "host\n"
    assert not mounts_mentioning([str(target), str(bundle.path)])


def test_symlinked_tmpfs_destination_does_not_cover_a_host_directory(box: Box) -> None:
    target = box.host_dir("target")
    (target / "sentinel").write_text("host\n")
    bundle = box.sh("ls -A /evil; echo inside > /evil/new")
    (bundle.rootfs / "evil").symlink_to(target)
    bundle.add_mount("/evil", "tmpfs", "tmpfs", ["size=1m"])
    bundle.write()
    result = box.runtime.run(bundle.id, bundle.path)
    if result.returncode == 0:
        assert result.stdout == "", result.describe()  # a fresh, empty tmpfs
    else:
        result.check_failed_clearly()
    assert sorted(p.name for p in target.iterdir()) == ["sentinel"], "host directory changed"
    assert not mounts_mentioning([str(target)])


def test_bind_source_that_does_not_exist(box: Box) -> None:
    bundle = box.bundle(["true"])
    missing = box.workdir / "no-such-source"
    bundle.add_bind(missing, "/mnt/x")
    bundle.write()
    create_fails(box, bundle)
    assert not missing.exists()


def test_dotdot_mount_destination_stays_inside_rootfs(box: Box) -> None:
    target = box.host_dir("target")
    (target / "sentinel").write_text("host\n")
    source = box.host_dir("source")
    (source / "from-source").write_text("source\n")
    dest = "/../../../../../../.." + str(target)
    bundle = box.sh(f"ls {target}")
    bundle.add_bind(source, dest)
    bundle.write()
    result = box.runtime.run(bundle.id, bundle.path)
    if result.returncode != 0:
        result.check_failed_clearly()
    else:
        assert result.stdout == "from-source\n", result.describe()
    assert sorted(p.name for p in target.iterdir()) == ["sentinel"], "host directory changed"
    assert not mounts_mentioning([str(target)])


@pytest.mark.parametrize("kind", ["maskedPaths", "readonlyPaths"])
def test_symlinked_masked_and_readonly_paths_stay_inside(box: Box, kind: str) -> None:
    # A host file named by a symlink in the rootfs must be neither masked nor made read-only
    # on the host: the path resolves inside the container's root.
    host_file = box.host_dir("target") / "file"
    host_file.write_text("host\n")
    bundle = box.sh("cat /link 2>&1; echo end")
    (bundle.rootfs / "link").symlink_to(host_file)
    bundle.config["linux"][kind].append("/link")
    result = box.runtime.run(bundle.id, bundle.path)
    if result.returncode != 0:
        result.check_failed_clearly()
    assert host_file.read_text() == "host\n"
    host_file.write_text("still writable\n")  # not made read-only on the host
    assert not mounts_mentioning([str(host_file.parent)])


# Not an unknown capability name: runc ignores it with a warning (for kernels that lack it).
@pytest.mark.parametrize("change", [
    "unknown-rlimit", "bad-seccomp-action", "hostname-without-uts",
    "duplicate-namespace",
])
def test_semantically_invalid_config(box: Box, change: str) -> None:
    bundle = box.bundle(["true"])
    config = bundle.config
    if change == "unknown-rlimit":
        config["process"]["rlimits"].append({"type": "RLIMIT_NOPE", "soft": 1, "hard": 1})
    elif change == "bad-seccomp-action":
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_MAYBE", "syscalls": []}
    elif change == "hostname-without-uts":
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                         if n["type"] != "uts"]
    elif change == "duplicate-namespace":
        config["linux"]["namespaces"].append({"type": "pid"})
    bundle.write()
    create_fails(box, bundle)
