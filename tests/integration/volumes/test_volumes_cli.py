"""Volumes with the official docker CLI against a real pydeskd: create/ls/inspect/rm/prune,
named volumes persisting across containers, filling from the image (and its confinement),
anonymous volumes from VOLUME, ``rm -v``, in-use refusals, events and ``system df``."""

from __future__ import annotations

import json
import os
import signal
import stat
import time

from tests.integration.volumes.conftest import IMAGE, Host, text
from tests.support.pydeskd import Pydeskd


def test_create_ls_inspect_rm(d: Pydeskd) -> None:
    assert text(d.docker("volume", "create", "--label", "team=a", "v1")).strip() == "v1"
    d.docker("volume", "create", "v2")
    # creating an existing name returns it, as Docker
    assert text(d.docker("volume", "create", "v1")).strip() == "v1"
    assert text(d.docker("volume", "ls", "-q")).split() == ["v1", "v2"]
    assert text(d.docker("volume", "ls", "-q", "--filter", "label=team=a")).split() == ["v1"]
    assert text(d.docker("volume", "ls", "-q", "--filter", "name=2")).split() == ["v2"]
    assert text(d.docker("volume", "ls", "-q", "--filter", "dangling=true")).split() == \
        ["v1", "v2"]
    info = json.loads(text(d.docker("volume", "inspect", "v1")))[0]
    assert info["Name"] == "v1" and info["Driver"] == "local" and info["Scope"] == "local"
    assert info["Labels"] == {"team": "a"}
    assert info["Mountpoint"] == str(d.data_root / "volumes" / "v1" / "_data")
    assert info["CreatedAt"].endswith("Z") and "T" in info["CreatedAt"]
    d.docker("volume", "rm", "v1", "v2")
    missing = d.docker("volume", "inspect", "v1", check=False)
    assert missing.returncode == 1 and b"no such volume" in missing.stderr
    gone = d.docker("volume", "rm", "nosuch", check=False)
    assert gone.returncode == 1 and b"get nosuch: no such volume" in gone.stderr
    d.docker("volume", "rm", "-f", "nosuch")
    bad = d.docker("volume", "create", "a/b", check=False)
    assert bad.returncode == 1 and b"includes invalid characters" in bad.stderr
    opt = d.docker("volume", "create", "-o", "type=nfs", "-o", "device=:/x", "nfs1",
                   check=False)
    assert opt.returncode == 1 and b"only type=tmpfs" in opt.stderr
    bad_filter = d.docker("volume", "ls", "--filter", "color=red", check=False)
    assert bad_filter.returncode == 1 and b"invalid filter 'color'" in bad_filter.stderr


def test_named_volume_persists_across_containers(d: Pydeskd) -> None:
    d.docker("run", "--rm", "-v", "keep:/data2", IMAGE, "sh", "-c",
             "echo persisted > /data2/f")
    out = d.docker("run", "--rm", "-v", "keep:/other", IMAGE, "cat", "/other/f")
    assert text(out) == "persisted\n"
    # created by first use, with no labels, and still there after --rm
    assert text(d.docker("volume", "ls", "-q")).split() == ["keep"]


def test_new_volume_is_filled_from_the_image(d: Pydeskd) -> None:
    out = d.docker("run", "--rm", "-v", "filled:/data", IMAGE, "sh", "-c",
                   "cd /data && stat -c '%n %a %u:%g %F' seed.txt sub sub/deep.txt link a b"
                   " && cat link && stat -c '%i' a b && stat -c '%a %u:%g' /data")
    lines = text(out).splitlines()
    assert lines[:6] == ["seed.txt 640 1000:1000 regular file", "sub 750 7:8 directory",
                         "sub/deep.txt 644 0:0 regular file", "link 777 0:0 symbolic link",
                         "a 644 0:0 regular file", "b 644 0:0 regular file"]
    assert lines[6] == "seed"
    assert lines[7] == lines[8], "the hardlink pair stays one inode"
    assert lines[9] == "755 0:0"
    data = d.data_root / "volumes" / "filled" / "_data"
    assert os.getxattr(data / "attrs", "user.color") == b"blue"
    null = (data / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and \
        os.minor(null.st_rdev) == 3 and stat.S_IMODE(null.st_mode) == 0o666
    # written content stays; an already filled volume is never filled again
    d.docker("run", "--rm", "-v", "filled:/data", IMAGE, "sh", "-c",
             "rm -rf /data/* && echo mine > /data/mine")
    out = d.docker("run", "--rm", "-v", "filled:/data", IMAGE, "ls", "/data")
    assert text(out).split() == ["mine"]
    # -v data:/etc fills from /etc; nocopy leaves the volume empty
    out = d.docker("run", "--rm", "-v", "etcvol:/etc", IMAGE, "cat", "/etc/group")
    assert text(out).startswith("root:x:0:")
    out = d.docker("run", "--rm", "-v", "bare:/data:nocopy", IMAGE, "ls", "-A", "/data")
    assert text(out) == ""
    out = d.docker("run", "--rm", "--mount", "type=volume,src=bare2,dst=/data,volume-nocopy",
                   IMAGE, "ls", "-A", "/data")
    assert text(out) == ""


def test_fill_stays_inside_the_rootfs(d: Pydeskd, host_dir: Host) -> None:
    # /escape is a symlink to a host path with a marker: resolved inside the rootfs it is
    # missing, so nothing is copied (and the host directory is untouched)
    out = d.docker("run", "--rm", "-v", "esc:/escape", IMAGE, "ls", "-A", "/escape")
    assert text(out) == ""
    assert not any((d.data_root / "volumes" / "esc" / "_data").iterdir())
    assert sorted(p.name for p in host_dir.dir.iterdir()) == ["HOST-SECRET"]
    # an in-image symlink is followed inside the image: /etc-link is the image's /etc
    out = d.docker("run", "--rm", "-v", "etclink:/etc-link", IMAGE, "ls", "/etc-link")
    assert "passwd" in text(out).split()


def test_anonymous_volumes_rm_v_and_prune(d: Pydeskd) -> None:
    cid = text(d.docker("create", IMAGE, "true")).strip()
    mounts = json.loads(text(d.docker("inspect", "--format", "{{json .Mounts}}", cid)))
    assert len(mounts) == 1 and mounts[0]["Destination"] == "/vol"
    anon = mounts[0]["Name"]
    assert len(anon) == 64
    info = json.loads(text(d.docker("volume", "inspect", anon)))[0]
    assert info["Labels"] == {"com.docker.volume.anonymous": ""}
    d.docker("start", "-a", cid)
    assert (d.data_root / "volumes" / anon / "_data" / "from-image").read_text() == "image\n"
    # in use: 409 with Docker's message
    busy = d.docker("volume", "rm", anon, check=False)
    assert busy.returncode == 1
    assert f"remove {anon}: volume is in use - [{cid}]".encode() in busy.stderr
    d.docker("rm", cid)                        # without -v the volume stays
    assert anon in text(d.docker("volume", "ls", "-q")).split()
    cid2 = text(d.docker("create", IMAGE, "true")).strip()
    anon2 = json.loads(text(d.docker("inspect", "--format", "{{json .Mounts}}", cid2)))[0]["Name"]
    d.docker("rm", "-v", cid2)                 # with -v it goes
    assert anon2 not in text(d.docker("volume", "ls", "-q")).split()
    d.docker("volume", "create", "named")
    pruned = text(d.docker("volume", "prune", "-f"))
    assert anon in pruned and "named" not in pruned
    assert text(d.docker("volume", "ls", "-q")).split() == ["named"]
    pruned = text(d.docker("volume", "prune", "-af"))
    assert "named" in pruned
    assert text(d.docker("volume", "ls", "-q")) == ""
    # docker run --rm removes its anonymous volumes too
    d.docker("run", "--rm", IMAGE, "true")
    assert text(d.docker("volume", "ls", "-q")) == ""


def test_in_use_survives_a_daemon_restart(d: Pydeskd) -> None:
    cid = text(d.docker("create", "-v", "held:/data", IMAGE, "true")).strip()
    d.stop()
    d.start()
    busy = d.docker("volume", "rm", "held", check=False)
    assert busy.returncode == 1 and cid.encode() in busy.stderr
    # the image's VOLUME /vol gave it an anonymous volume too
    used = text(d.docker("volume", "ls", "-q", "--filter", "dangling=false")).split()
    assert "held" in used and len(used) == 2
    assert text(d.docker("volume", "ls", "-q", "--filter", "dangling=true")) == ""
    d.docker("rm", cid)
    d.docker("volume", "rm", "held")


def test_volume_events(d: Pydeskd) -> None:
    since = f"{time.time():.9f}"
    d.docker("run", "--rm", "-v", "ev:/data", IMAGE, "true")
    d.docker("volume", "rm", "ev")
    until = f"{time.time() + 1:.9f}"
    fmt = "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.destination}}"
    out = d.docker("events", "--since", since, "--until", until, "--filter", "type=volume",
                   "--filter", "volume=ev", "--format", fmt)
    lines = text(out).splitlines()
    assert lines == ["create ev <no value>", "mount ev /data", "unmount ev <no value>",
                     "destroy ev <no value>"], lines


def test_system_df(d: Pydeskd) -> None:
    d.docker("volume", "create", "dfvol")
    d.docker("run", "-v", "dfvol:/data", "--name", "dfc", IMAGE, "sh", "-c",
             "head -c 100000 /bin/busybox > /data/blob")
    out = text(d.docker("system", "df"))
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["TYPE", "TOTAL"]
    kinds = [line.split()[0] for line in lines[1:]]
    assert kinds == ["Images", "Containers", "Local", "Build"], out
    assert lines[1].split()[1:3] == ["1", "1"]          # one image, used by one container
    assert lines[2].split()[1:3] == ["1", "0"]          # one container, not running
    # Local Volumes: dfvol and the image's anonymous /vol, both used by dfc
    assert lines[3].split()[2:4] == ["2", "2"]
    verbose = text(d.docker("system", "df", "-v"))
    assert "dfvol" in verbose and "volimg" in verbose and "dfc" in verbose
    row = next(line for line in verbose.splitlines() if line.startswith("dfvol"))
    assert row.split()[1] == "1"                          # LINKS
    assert row.split()[2].endswith("kB")                  # SIZE of the 100 kB blob
    raw = json.loads(text(d.docker("system", "df", "--format", "{{json .}}")).splitlines()[0])
    assert raw["Type"] == "Images"




def test_a_live_restored_run_unmounts_its_tmpfs_volume(d: Pydeskd) -> None:
    d.client().api.create_volume("rt", driver_opts={"type": "tmpfs", "device": "tmpfs"})
    cid = text(d.docker("run", "-d", "-v", "rt:/t", IMAGE, "sleep", "1000")).strip()
    mountpoint = str(d.data_root / "volumes" / "rt" / "_data")

    def mounted() -> bool:
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == mountpoint for line in mounts)

    assert mounted()
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)      # the container keeps running (live restore)
    d.proc.wait()
    d.proc = None
    d.start()
    assert text(d.docker("inspect", "--format", "{{.State.Status}}", cid)).strip() == "running"
    since = f"{time.time():.9f}"
    d.docker("stop", "-t", "0", cid)
    assert not mounted(), "the restored run's exit unmounts the tmpfs"
    out = d.docker("events", "--since", since, "--until", f"{time.time() + 1:.9f}",
                   "--filter", "volume=rt", "--format", "{{.Action}} {{.Actor.ID}}")
    assert text(out).splitlines() == ["unmount rt"]
