"""The state file and the status derived from it (init alive, exec fifo, reused pid)."""

from __future__ import annotations

import marshal
import os
import subprocess
from pathlib import Path

import pytest

from pydeskd.runtime import state as st
from pydeskd.runtime.errors import ContainerNotFound, RuntimeFailure


def saved(root: Path, pid: int, start_time: int | None, fifo: bool) -> dict[str, object]:
    state_dir = root / "c1"
    state_dir.mkdir(parents=True)
    st.save(str(state_dir), {"id": "c1", "pid": pid, "start_time": start_time,
                             "bundle": "/b", "rootfs": "/b/rootfs", "created": "now",
                             "annotations": {"a": "b"}, "_dir": "ignored"})
    if fifo:
        os.mkfifo(state_dir / st.EXEC_FIFO)
    return st.load(str(root), "c1")


def test_save_is_atomic_marshal_without_private_keys(tmp_path: Path) -> None:
    saved(tmp_path, 1, 0, False)
    data = marshal.loads((tmp_path / "c1" / st.STATE_FILE).read_bytes())
    assert "_dir" not in data and data["id"] == "c1"
    assert os.listdir(tmp_path / "c1") == [st.STATE_FILE]  # no temporary file left


def test_live_init_with_fifo_is_created_then_running(tmp_path: Path) -> None:
    stat = st.proc_stat(os.getpid())
    assert stat is not None
    data = saved(tmp_path, os.getpid(), stat[1], True)
    assert st.status(data) == st.CREATED
    os.unlink(tmp_path / "c1" / st.EXEC_FIFO)
    assert st.status(data) == st.RUNNING


def test_reused_pid_is_stopped(tmp_path: Path) -> None:
    stat = st.proc_stat(os.getpid())
    assert stat is not None
    data = saved(tmp_path, os.getpid(), stat[1] - 1, False)
    assert st.status(data) == st.STOPPED


def test_dead_and_zombie_inits_are_stopped(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    while (stat := st.proc_stat(child.pid)) is not None and stat[0] != "Z":
        pass  # wait for it to exit; it stays a zombie until we reap it
    assert stat is not None
    data = saved(tmp_path, child.pid, stat[1], False)
    assert st.status(data) == st.STOPPED
    child.wait()
    assert st.status(data) == st.STOPPED


def test_oci_state_reports_pid_zero_when_stopped(tmp_path: Path) -> None:
    data = saved(tmp_path, 123456789, 1, False)
    out = st.oci_state(data, st.STOPPED)
    assert out["pid"] == 0 and out["status"] == "stopped"
    assert out["annotations"] == {"a": "b"}
    assert set(out) >= {"ociVersion", "id", "bundle", "rootfs", "created"}


def test_unknown_container_and_bad_ids(tmp_path: Path) -> None:
    with pytest.raises(ContainerNotFound, match="does not exist"):
        st.load(str(tmp_path), "nope")
    for bad in ("", ".", "..", "a/b", "../x", "a b"):
        with pytest.raises(RuntimeFailure, match="invalid container id"):
            st.container_dir(str(tmp_path), bad)


def test_list_ids_only_lists_dirs_with_state(tmp_path: Path) -> None:
    saved(tmp_path, 1, 0, False)
    (tmp_path / "half-made").mkdir()
    assert st.list_ids(str(tmp_path)) == ["c1"]
    assert st.list_ids(str(tmp_path / "missing")) == []


def test_provisional_state_is_creating_only_while_its_runtime_lives(tmp_path: Path) -> None:
    me = st.proc_stat(os.getpid())
    assert me is not None
    data = {"_dir": str(tmp_path), "pid": 0, "provisional": True, "runtime": [os.getpid(), me[1]]}
    assert st.status(data) == st.CREATING
    data["runtime"] = [os.getpid(), me[1] + 1]  # a reused pid: the creating runtime is gone
    assert st.status(data) == st.STOPPED
    data["runtime"] = [0, None]
    assert st.status(data) == st.STOPPED
