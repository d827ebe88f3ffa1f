"""docker cp through pydeskd with the official CLI and docker-py: files, directories and
symlinks both ways, running and stopped containers, volumes, hostile symlinks, read-only
rootfs; every escape attempt is checked against a sentinel on the host."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

from tests.integration.containers_cp.conftest import BUSYBOX, out
from tests.support.pydeskd import Pydeskd


def _run(d: Pydeskd, *args: str) -> str:
    return out(d, "run", "-d", *args, BUSYBOX, "sleep", "300")


def test_cp_file_and_dir_both_ways_running(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d)
    src = tmp_path / "in.txt"
    src.write_text("hello from the host\n")
    d.docker("cp", str(src), f"{cid}:/tmp/")
    assert out(d, "exec", cid, "cat", "/tmp/in.txt") == "hello from the host"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("deep")
    (tree / "link").symlink_to("sub/f")
    d.docker("cp", str(tree), f"{cid}:/tmp")
    d.docker("cp", str(tree), f"{cid}:/renamed")  # missing: the tree is copied as it
    assert out(d, "exec", cid, "cat", "/tmp/tree/sub/f") == "deep"
    assert out(d, "exec", cid, "cat", "/renamed/sub/f") == "deep"
    assert out(d, "exec", cid, "busybox", "readlink", "/tmp/tree/link") == "sub/f"
    d.docker("exec", cid, "sh", "-c", "mkdir -p /data/x && echo out > /data/x/o && "
             "busybox ln -s /data/x/o /data/l")
    d.docker("cp", f"{cid}:/data/x", str(tmp_path / "back"))
    assert (tmp_path / "back" / "o").read_text() == "out\n"
    d.docker("cp", f"{cid}:/data/l", str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "/data/x/o"  # the link itself, not followed
    d.docker("cp", "-L", f"{cid}:/data/l", str(tmp_path / "followed"))
    assert (tmp_path / "followed").read_text() == "out\n"


def test_cp_missing_path_is_not_found(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d)
    done = d.docker("cp", f"{cid}:/nope", str(tmp_path / "x"), check=False)
    assert done.returncode != 0
    assert b"Could not find the file /nope in container" in done.stderr


def test_cp_into_and_out_of_a_stopped_container(d: Pydeskd, tmp_path: Path) -> None:
    cid = out(d, "create", BUSYBOX, "cat", "/etc/copied")
    src = tmp_path / "copied"
    src.write_text("made while stopped\n")
    d.docker("cp", str(src), f"{cid}:/etc/copied")
    d.docker("cp", f"{cid}:/etc/copied", str(tmp_path / "again"))
    assert (tmp_path / "again").read_text() == "made while stopped\n"
    d.docker("start", "-a", cid)
    assert out(d, "logs", cid) == "made while stopped"
    d.docker("cp", f"{cid}:/bin/busybox", str(tmp_path / "bb"))
    assert (tmp_path / "bb").stat().st_size > 100_000
    _no_cp_mounts(d)


def _no_cp_mounts(d: Pydeskd) -> None:
    """The temporary mounts of stopped containers are gone (soon after the stream ended: the
    CLI may exit before the daemon has sent the tar's end)."""
    deadline = time.monotonic() + 10
    while f"{d.exec_root}/cp/" in Path("/proc/self/mountinfo").read_text():
        assert time.monotonic() < deadline, "a docker cp mount was left behind"
        time.sleep(0.05)


def test_cp_into_a_volume_path(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d, "-v", "cpvol:/vol")
    src = tmp_path / "v.txt"
    src.write_text("in the volume\n")
    d.docker("cp", str(src), f"{cid}:/vol/")
    other = out(d, "run", "--rm", "-v", "cpvol:/v", BUSYBOX, "cat", "/v/v.txt")
    assert other == "in the volume"
    d.docker("stop", "-t", "0", cid)
    d.docker("cp", f"{cid}:/vol/v.txt", str(tmp_path / "from-stopped"))
    assert (tmp_path / "from-stopped").read_text() == "in the volume\n"
    d.docker("rm", cid)
    d.docker("volume", "rm", "cpvol", check=False)


def test_hostile_symlinks_never_reach_the_host(d: Pydeskd, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("host file\n")
    cid = _run(d)
    d.docker("exec", cid, "sh", "-c",
             f"busybox ln -s / /escape && busybox ln -s {tmp_path} /hostdir && "
             f"echo container-shadow > /etc/shadow && busybox ln -s ../../../../../.. /up")
    d.docker("cp", f"{cid}:/escape/etc/shadow", str(tmp_path / "shadow"))
    assert (tmp_path / "shadow").read_text() == "container-shadow\n"
    done = d.docker("cp", f"{cid}:/hostdir/sentinel", str(tmp_path / "leak"), check=False)
    assert done.returncode != 0 and not (tmp_path / "leak").exists()
    done = d.docker("cp", f"{cid}:/up{sentinel}", str(tmp_path / "leak2"), check=False)
    assert done.returncode != 0 and not (tmp_path / "leak2").exists()
    evil = tmp_path / "evil"
    evil.write_text("overwritten\n")
    d.docker("cp", str(evil), f"{cid}:/hostdir/", check=False)
    d.docker("cp", str(evil), f"{cid}:/up{tmp_path}/", check=False)
    assert sentinel.read_text() == "host file\n"
    d.docker("exec", cid, "mkdir", "-p", str(tmp_path))  # the path now exists: in the container
    d.docker("cp", str(evil), f"{cid}:/hostdir/")
    d.docker("cp", str(evil), f"{cid}:/escape{tmp_path}/sentinel")
    assert out(d, "exec", cid, "cat", f"{tmp_path}/evil", f"{tmp_path}/sentinel") == \
        "overwritten\noverwritten"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil", "sentinel", "shadow"]


def test_put_tar_with_dotdot_is_refused(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d)
    client = d.client()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../../../../../../../" + str(tmp_path / "pwned"))
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    ok = False
    try:
        ok = client.api.put_archive(cid, "/tmp", buf.getvalue())
    except Exception:  # docker.errors.APIError: refused, as expected
        ok = False
    assert not ok
    assert not (tmp_path / "pwned").exists()


def test_read_only_rootfs_refuses_put(d: Pydeskd, tmp_path: Path) -> None:
    ro_bind = tmp_path / "ro-bind"
    ro_bind.mkdir()
    cid = _run(d, "--read-only", "-v", "/data", "-v", f"{ro_bind}:/robind:ro")
    src = tmp_path / "f"
    src.write_text("x")
    done = d.docker("cp", str(src), f"{cid}:/tmp/", check=False)
    assert done.returncode != 0
    assert b"container rootfs is marked read-only" in done.stderr
    done = d.docker("cp", str(src), f"{cid}:/robind/", check=False)
    assert done.returncode != 0 and b"mounted volume is marked read-only" in done.stderr
    assert list(ro_bind.iterdir()) == []
    d.docker("cp", str(src), f"{cid}:/data/")  # a volume stays writable
    assert out(d, "exec", cid, "cat", "/data/f") == "x"


def test_docker_py_put_and_get_archive(d: Pydeskd) -> None:
    client = d.client()
    container = client.containers.run(BUSYBOX, ["sleep", "300"], detach=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("dir/hello")
        info.size = 5
        info.uid, info.gid = 1234, 4321
        tar.addfile(info, io.BytesIO(b"hello"))
    assert container.put_archive("/root", buf.getvalue())
    assert container.exec_run(["stat", "-c", "%u:%g", "/root/dir/hello"]).output == \
        b"1234:4321\n"
    chunks, stat = container.get_archive("/root/dir")
    assert stat["name"] == "dir" and stat["mode"] & (1 << 31)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        names = tar.getnames()
        member = tar.extractfile("dir/hello")
        assert member is not None and member.read() == b"hello"
    assert "dir" in names and "dir/hello" in names


def _cgroup_file(d: Pydeskd, cid: str, controller: str, name: str) -> str:
    """A cgroup file of the container's init process, read on the host."""
    pid = out(d, "inspect", "-f", "{{.State.Pid}}", cid)
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return (Path("/sys/fs/cgroup") / path.lstrip("/") / name).read_text().strip()
        if controller in controllers.split(","):
            return (Path("/sys/fs/cgroup") / controllers / path.lstrip("/") / name
                    ).read_text().strip()
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_update_memory_pids_and_restart_policy(d: Pydeskd) -> None:
    cid = _run(d)
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    d.docker("update", "--memory", "64m", "--memory-swap", "128m", "--pids-limit", "50",
             "--cpu-shares", "512", "--restart", "on-failure:3", cid)
    if v2:
        assert _cgroup_file(d, cid, "memory", "memory.max") == str(64 << 20)
        assert _cgroup_file(d, cid, "memory", "memory.swap.max") == str(64 << 20)
    else:
        assert _cgroup_file(d, cid, "memory", "memory.limit_in_bytes") == str(64 << 20)
        assert _cgroup_file(d, cid, "memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
        assert _cgroup_file(d, cid, "cpu", "cpu.shares") == "512"
    assert _cgroup_file(d, cid, "pids", "pids.max") == "50"
    host = out(d, "inspect", "-f",
               "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.PidsLimit}} "
               "{{.HostConfig.CpuShares}} {{.HostConfig.RestartPolicy.Name}} "
               "{{.HostConfig.RestartPolicy.MaximumRetryCount}}", cid)
    assert host == f"{64 << 20} {128 << 20} 50 512 on-failure 3"
    d.docker("update", "--pids-limit", "-1", cid)
    assert _cgroup_file(d, cid, "pids", "pids.max") == "max"
    # The limits stay after a restart (the next spec is built from the record).
    d.docker("restart", "-t", "0", cid)
    assert _cgroup_file(d, cid, "memory", "memory.max" if v2 else "memory.limit_in_bytes") \
        == str(64 << 20)


def test_update_refusals(d: Pydeskd) -> None:
    cid = _run(d)
    done = d.docker("update", "--memory", "1m", cid, check=False)
    assert done.returncode != 0 and b"Minimum memory limit allowed is 6MB" in done.stderr
    rm = out(d, "run", "-d", "--rm", BUSYBOX, "sleep", "300")
    done = d.docker("update", "--restart", "always", rm, check=False)
    assert done.returncode != 0 and b"AutoRemove is enabled" in done.stderr
    done = d.docker("update", "--memory", "64m", "nosuchcontainer", check=False)
    assert done.returncode != 0 and b"No such container" in done.stderr


def test_update_of_a_stopped_container_applies_at_start(d: Pydeskd) -> None:
    cid = out(d, "create", BUSYBOX, "sleep", "300")
    d.docker("update", "--pids-limit", "33", cid)
    d.docker("start", cid)
    assert _cgroup_file(d, cid, "pids", "pids.max") == "33"


def test_export_lists_the_rootfs_without_volumes(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d, "-v", "/vol")
    d.docker("exec", cid, "sh", "-c", "echo new > /root/made && echo v > /vol/in-volume && "
             "busybox ln -s / /escape")
    for state in ("running", "stopped"):
        done = d.docker("export", cid)
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
            names = set(tar.getnames())
            made = tar.extractfile("root/made")
            assert made is not None and made.read() == b"new\n"
            assert tar.getmember("escape").issym()
        assert {"bin/busybox", "etc/passwd", "root/made", "escape"} <= names, state
        assert "vol/in-volume" not in names
        assert not any(n.startswith("escape/") for n in names)
        if state == "running":
            d.docker("stop", "-t", "0", cid)
    target = tmp_path / "out.tar"
    d.docker("export", "-o", str(target), cid)
    with tarfile.open(target) as tar:
        assert "root/made" in tar.getnames()
    _no_cp_mounts(d)


def test_cp_tar_streams_file_mounts_and_events(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d, "--hostname", "cphost")
    since = str(int(time.time()) - 1)
    done = d.docker("cp", f"{cid}:/etc/hostname", "-")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        member = tar.extractfile("hostname")
        assert member is not None and member.read() == b"cphost\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("from-stdin")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    d.docker("cp", "-", f"{cid}:/tmp", input=buf.getvalue())
    assert out(d, "exec", cid, "cat", "/tmp/from-stdin") == "abc"
    events = out(d, "events", "--since", since, "--until", str(int(time.time()) + 1),
                 "--filter", f"container={cid}", "--format", "{{.Action}}").split()
    assert "archive-path" in events and "extract-to-dir" in events


def test_put_no_overwrite_dir_non_dir(d: Pydeskd) -> None:
    cid = _run(d)
    api = d.client().api
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("tmp")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    url = api._url("/containers/{0}/archive", cid)
    refused = api._put(url, params={"path": "/", "noOverwriteDirNonDir": "true"},
                       data=buf.getvalue())
    assert refused.status_code == 400 and "cannot overwrite directory" in refused.text
    missing = api._put(url, params={"path": "/nope"}, data=buf.getvalue())
    assert missing.status_code == 404
    not_dir = api._put(url, params={"path": "/etc/passwd"}, data=buf.getvalue())
    assert not_dir.status_code == 400 and "not a directory" in not_dir.text
    head = api.head(url, params={"path": "/etc/passwd"})
    assert head.status_code == 200 and "X-Docker-Container-Path-Stat" in head.headers


def test_deep_trees_are_copied_and_removed(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d, "-v", "/deep")
    depth = 1500  # deeper than Python's recursion limit
    d.docker("exec", cid, "sh", "-c",
             f"cd /deep && i=0; while [ $i -lt {depth} ]; do mkdir d && cd d; i=$((i+1)); done"
             " && echo bottom > f")
    done = d.docker("cp", f"{cid}:/deep", "-")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        names = tar.getnames()
    assert "deep/" + "d/" * depth + "f" in names
    source = out(d, "inspect", "-f", '{{range .Mounts}}{{.Source}}{{end}}', cid)
    assert Path(source).is_dir()
    d.docker("rm", "-f", "-v", cid)
    assert not Path(source).exists()


def test_copy_uid_gid_uses_the_container_user(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d, "--user", "nobody")
    api = d.client().api
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("kept", "mapped"):
            info = tarfile.TarInfo(name)
            info.size = 1
            info.uid, info.gid = 1234, 4321
            tar.addfile(info, io.BytesIO(b"x"))
    data = buf.getvalue()
    url = api._url("/containers/{0}/archive", cid)
    assert api._put(url, params={"path": "/tmp"}, data=data).status_code == 200
    assert api._put(url, params={"path": "/root", "copyUIDGID": "1"},
                    data=data).status_code == 200
    owners = out(d, "exec", "-u", "0", cid, "stat", "-c", "%u:%g", "/tmp/kept", "/root/mapped")
    assert owners.split() == ["1234:4321", "65534:65534"]


def test_cp_dir_contents_and_into_a_symlinked_dir(d: Pydeskd, tmp_path: Path) -> None:
    cid = _run(d)
    d.docker("exec", cid, "sh", "-c", "mkdir -p /srv/real && echo a > /srv/real/a && "
             "busybox ln -s /srv/real /srv/link")
    d.docker("cp", f"{cid}:/srv/real/.", str(tmp_path / "contents"))
    assert sorted(p.name for p in (tmp_path / "contents").iterdir()) == ["a"]
    src = tmp_path / "b"
    src.write_text("b\n")
    d.docker("cp", str(src), f"{cid}:/srv/link")  # a symlink to a directory: copied into it
    assert out(d, "exec", cid, "cat", "/srv/real/b") == "b"
    d.docker("cp", f"{cid}:/srv/link/", str(tmp_path / "via-link"))  # trailing /: followed
    assert sorted(p.name for p in (tmp_path / "via-link").iterdir()) == ["a", "b"]


def test_start_while_a_copy_of_the_stopped_container_streams(d: Pydeskd) -> None:
    client = d.client()
    container = client.containers.create(BUSYBOX, ["sleep", "300"])
    chunks, _ = container.get_archive("/bin/busybox", chunk_size=4096)
    stream = iter(chunks)
    first = next(stream)  # the daemon has the snapshot mounted for the copy now
    container.start()
    container.reload()
    assert container.status == "running"
    rest = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(first + rest)) as tar:
        assert tar.getmember("busybox").size > 100_000
    container.exec_run(["touch", "/made-after-start"])
    _no_cp_mounts(d)
    assert container.exec_run(["test", "-e", "/made-after-start"]).exit_code == 0
