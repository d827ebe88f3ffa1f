"""Conformance: the container's filesystem view (read-only root, bind mounts, tmpfs options,
masked and read-only paths, device nodes) is what config.json asks for."""

from __future__ import annotations

from pathlib import Path

from tests.support.conformance import Box

EROFS = "Read-only file system"


def mount_options(proc_mounts: str, target: str) -> set[str]:
    for line in proc_mounts.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == target:
            return set(fields[3].split(","))
    raise AssertionError(f"{target} not mounted:\n{proc_mounts}")


def test_read_only_root(box: Box) -> None:
    bundle = box.sh("touch /newfile; echo rc=$?; cat /proc/self/mounts")
    bundle.config["root"]["readonly"] = True
    result = box.run(bundle)
    assert result.returncode == 0, result.describe()
    assert "rc=1" in result.stdout
    assert EROFS in result.stderr
    assert "ro" in mount_options(result.stdout, "/")
    assert not (bundle.rootfs / "newfile").exists()


def test_writable_root(box: Box) -> None:
    bundle = box.sh("echo hi > /newfile")
    box.run_ok(bundle)
    assert (bundle.rootfs / "newfile").read_text() == "hi\n"


def test_bind_mounts_rw_and_ro(box: Box) -> None:
    rw = box.host_dir("rw")
    ro = box.host_dir("ro")
    (ro / "existing").write_text("from host\n")
    bundle = box.sh("echo written > /rw/new; cat /ro/existing; touch /ro/new; echo rc=$?")
    bundle.add_bind(rw, "/rw")
    bundle.add_bind(ro, "/ro", readonly=True)
    result = box.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "from host\nrc=1\n"
    assert EROFS in result.stderr
    assert (rw / "new").read_text() == "written\n"
    assert sorted(p.name for p in ro.iterdir()) == ["existing"]


def test_bind_mount_of_a_file(box: Box) -> None:
    src = box.host_dir("file") / "conf"
    src.write_text("setting=1\n")
    bundle = box.bundle(["cat", "/etc/app.conf"])
    bundle.add_mount("/etc/app.conf", "bind", str(src), ["bind", "ro"])
    assert box.run_ok(bundle) == "setting=1\n"


def test_tmpfs_options(box: Box) -> None:
    bundle = box.sh("stat -c %a /scratch; cat /proc/self/mounts; "
                    "dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null; echo dd=$?")
    bundle.add_mount("/scratch", "tmpfs", "tmpfs", ["nosuid", "nodev", "size=1m", "mode=1750"])
    result = box.run(bundle)
    assert result.returncode == 0, result.describe()
    first, _, rest = result.stdout.partition("\n")
    assert first == "1750"
    options = mount_options(rest, "/scratch")
    assert {"nosuid", "nodev", "size=1024k", "mode=1750"} <= options, options
    assert "dd=1" in rest, "a 2 MiB file fit in a 1 MiB tmpfs"


def test_masked_paths(box: Box) -> None:
    # /proc/kcore is absent on some kernels (this one): the default masked files that the host
    # has and that are not empty there must read empty inside.
    files = [f for f in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
             if Path(f).is_file() and Path(f).read_bytes()[:1]]
    assert files, "no non-empty masked /proc file on this host to test with"
    bundle = box.sh(f"for f in {' '.join(files)}; do echo $f $(cat $f | wc -c); done; "
                    "ls -A /sys/firmware; echo --; cat /etc/secret; ls -A /etc/secret-dir; "
                    "echo end")
    (bundle.rootfs / "etc" / "secret").write_text("password\n")
    (bundle.rootfs / "etc" / "secret-dir").mkdir()
    (bundle.rootfs / "etc" / "secret-dir" / "key").write_text("key\n")
    bundle.config["linux"]["maskedPaths"] += ["/etc/secret", "/etc/secret-dir"]
    expected = "".join(f"{f} 0\n" for f in files) + "--\nend\n"
    assert box.run_ok(bundle) == expected


def test_read_only_paths(box: Box) -> None:
    bundle = box.sh("echo 1 > /proc/sys/kernel/ns_last_pid; echo proc=$?; "
                    "touch /data/new; echo data=$?; cat /data/old; cat /proc/self/mounts")
    (bundle.rootfs / "data").mkdir()
    (bundle.rootfs / "data" / "old").write_text("readable\n")
    bundle.config["linux"]["readonlyPaths"].append("/data")
    result = box.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout.startswith("proc=1\ndata=1\nreadable\n"), result.stdout
    assert result.stderr.count(EROFS) == 2, result.stderr
    assert "ro" in mount_options(result.stdout, "/proc/sys")
    assert "ro" in mount_options(result.stdout, "/data")
    assert not (bundle.rootfs / "data" / "new").exists()


def test_default_devices_exist_and_work(box: Box) -> None:
    bundle = box.sh("for d in null zero full random urandom tty; do stat -c '%n %F %t:%T' /dev/$d;"
                    " done; echo x > /dev/null && echo null-ok; "
                    "head -c 4 /dev/zero | od -An -tx1; head -c 8 /dev/urandom | wc -c; "
                    "echo x > /dev/full; echo full=$?")
    result = box.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout.splitlines() == [
        "/dev/null character special file 1:3",
        "/dev/zero character special file 1:5",
        "/dev/full character special file 1:7",
        "/dev/random character special file 1:8",
        "/dev/urandom character special file 1:9",
        "/dev/tty character special file 5:0",
        "null-ok",
        " 00 00 00 00",
        "8",
        "full=1",
    ]


def fuse_device(path: str = "/dev/fuse") -> dict[str, object]:
    return {"path": path, "type": "c", "major": 10, "minor": 229, "fileMode": 0o640,
            "uid": 0, "gid": 5}


def test_listed_device_is_created_and_allowed(box: Box) -> None:
    bundle = box.sh("stat -c '%F %t:%T %a %u %g' /dev/fuse; exec 3<>/dev/fuse && echo opened")
    bundle.config["linux"]["devices"] = [fuse_device()]
    bundle.config["linux"]["resources"]["devices"].append(
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"})
    result = box.run(bundle)
    assert result.returncode == 0, result.describe()
    assert result.stdout == "character special file a:e5 640 0 5\nopened\n"


def test_device_denied_by_cgroup_rules_cannot_be_opened(box: Box) -> None:
    # The node exists (mknod is done by the runtime) but no rule allows c 10:229.
    bundle = box.sh("stat -c '%F %t:%T' /dev/fuse; exec 3<>/dev/fuse; echo opened")
    bundle.config["linux"]["devices"] = [fuse_device()]
    result = box.run(bundle)
    assert result.stdout == "character special file a:e5\n", result.describe()
    assert result.returncode != 0
    assert "Operation not permitted" in result.stderr
