"""Bind sources in every form Docker and Compose send (review findings 5, 6, 9: proofs
p8_file_bind_in_dir_session, p7_ignored_subpath, p6_missing_bind_source), and pydesk's own
directory never synced."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from pydesk.sync.errors import HostPathNotFound, ProtectedPath
from pydesk.sync.manager import SyncManager
from pydesk.sync.transport import local_factory

from .conftest import SyncSetup, eventually, tree


def test_a_file_bind_inside_a_synced_directory_is_updated_in_place(sync: SyncSetup) -> None:
    (sync.host / "nginx.conf").write_text("v1")
    m = sync.manager()
    m.guest_path(str(sync.host))  # service A: .:/app
    g = Path(m.guest_path(str(sync.host / "nginx.conf")))  # service B: ./nginx.conf:/etc/...
    fd = os.open(g, os.O_RDONLY)  # stands for the container's bind mount of that inode
    try:
        (sync.host / "nginx.conf.new").write_text("v2 edited")
        os.rename(sync.host / "nginx.conf.new", sync.host / "nginx.conf")  # an editor's save
        eventually(lambda: os.pread(fd, 100, 0) == b"v2 edited", 2, "the bound inode updated")
    finally:
        os.close(fd)
    assert len(m.status()) == 2
    assert m.guest_path(str(sync.host / "nginx.conf")) == str(g)  # its session is reused


def test_a_file_bind_ignored_by_its_directory_rules_is_still_synced(sync: SyncSetup) -> None:
    (sync.host / ".pydeskignore").write_text("*.log\n")
    (sync.host / "app.log").write_text("bound on purpose")
    g = Path(sync.manager().guest_path(str(sync.host / "app.log")))
    assert g.read_text() == "bound on purpose"


def test_an_ignored_directory_inside_a_synced_root_gets_its_own_copy(sync: SyncSetup) -> None:
    (sync.host / ".git").mkdir()
    (sync.host / ".git/HEAD").write_text("ref: refs/heads/main")
    (sync.host / ".pydeskignore").write_text("build/\n")
    (sync.host / "build").mkdir()
    (sync.host / "build/out.bin").write_text("artifact")
    (sync.host / "src.py").write_text("x")
    m = sync.manager()
    root = m.guest_path(str(sync.host))  # docker run -v $PWD:/app
    assert not Path(root, ".git").exists()
    git = Path(m.guest_path(str(sync.host / ".git")))  # -v $PWD/.git:/repo.git
    assert not git.is_relative_to(root)
    assert (git / "HEAD").read_text() == "ref: refs/heads/main"
    (git / "config").write_text("[core]")  # a container's write reaches the host
    eventually((sync.host / ".git/config").exists, 2, "a write in the ignored dir's own copy")
    build = Path(m.guest_path(str(sync.host / "build")))
    assert tree(build) == tree(sync.host / "build")
    assert len(m.status()) == 3
    # A path below the separate copy's root reuses it, not the outer root.
    (sync.host / ".git/refs").mkdir()
    assert m.guest_path(str(sync.host / ".git/refs")) == str(git / "refs")


def test_a_missing_bind_source_is_created_when_asked(sync: SyncSetup) -> None:
    m = sync.manager()
    with pytest.raises(HostPathNotFound):
        m.guest_path(str(sync.host / "data"))
    assert not (sync.host / "data").exists()
    old = os.umask(0o027)
    try:
        g = Path(m.guest_path(str(sync.host / "data/mysql"), create=True))
    finally:
        os.umask(old)
    for made in (sync.host / "data", sync.host / "data/mysql"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o750  # Docker's MkdirAll, our umask
    assert g.is_dir()
    (g / "ibdata1").write_text("written by the container")
    eventually((sync.host / "data/mysql/ibdata1").exists, 2, "the created dir is synced")


def test_a_missing_source_inside_a_synced_root_is_created_and_reused(sync: SyncSetup) -> None:
    m = sync.manager()
    root = m.guest_path(str(sync.host))
    assert m.guest_path(str(sync.host / "new/dir"), create=True) == root + "/new/dir"
    assert Path(root, "new/dir").is_dir() and len(m.status()) == 1


def test_a_source_that_cannot_be_created_is_a_400(sync: SyncSetup) -> None:
    (sync.host / "file").write_text("x")
    with pytest.raises(Exception, match="cannot create bind source") as info:
        sync.manager().guest_path(str(sync.host / "file/sub"), create=True)
    assert getattr(info.value, "status", None) == 400


def test_pydesk_home_is_never_synced(sync: SyncSetup) -> None:
    home = sync.host / "user-home"
    pydesk = home / ".pydesk"
    (pydesk / "dev").mkdir(parents=True)
    (pydesk / "dev/data.qcow2").write_bytes(b"\0" * 4096)
    (home / "notes.txt").write_text("mine")
    (home / ".pydeskignore").write_text("!.pydesk/\n")  # cannot re-include it
    m = SyncManager(local_factory(sys.executable), sync.state, guest_base=str(sync.guest_base),
                    pydesk_home=pydesk, first_sync_timeout=120)
    sync.managers.append(m)
    g = Path(m.guest_path(str(home)))  # docker run -v $HOME:/home/me
    assert (g / "notes.txt").read_text() == "mine"
    assert not (g / ".pydesk").exists()
    (pydesk / "dev/new").write_text("x")
    (home / "later").write_text("y")
    eventually((g / "later").exists, 2, "live sync")
    assert not (g / ".pydesk").exists()
    for inside in (pydesk, pydesk / "dev", pydesk / "missing"):
        with pytest.raises(ProtectedPath, match="pydesk's own directory") as info:
            m.guest_path(str(inside), create=True)
        assert info.value.status == 400
    assert not (pydesk / "missing").exists()


def test_the_state_dir_is_never_synced_either(sync: SyncSetup) -> None:
    (sync.host / "f").write_text("x")
    m = SyncManager(local_factory(sys.executable), sync.host / "state",
                    guest_base=str(sync.guest_base), first_sync_timeout=120)
    sync.managers.append(m)
    g = Path(m.guest_path(str(sync.host)))
    assert (g / "f").exists() and not (g / "state").exists()
    with pytest.raises(ProtectedPath):
        m.guest_path(str(sync.host / "state"))
