"""Instance files and keys; the data disk through the real qemu-img (unprivileged, fast)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pydesk.vm.channel import parse_http_response, pinned_key
from pydesk.vm.config import VmConfig
from pydesk.vm.disks import GIB, DiskChange, disk_size, ensure_data_disk
from pydesk.vm.errors import ChannelError, InvalidArgument, NotFound
from pydesk.vm.instance import (
    ensure_keys,
    instance_files,
    list_instances,
    load_config,
    pydesk_home,
    save_config,
)


def test_home_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYDESK_HOME", str(tmp_path))
    assert pydesk_home() == tmp_path
    assert instance_files("default").dir == tmp_path / "default"
    with pytest.raises(InvalidArgument):
        instance_files("../etc")


def test_keys_made_once_private(tmp_path: Path) -> None:
    files = instance_files("default", tmp_path)
    keys = ensure_keys(files)
    for private in (files.client_key, files.host_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert keys.client_public_line.startswith("ssh-ed25519 ")
    assert keys.host_private_text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert ensure_keys(files) == keys
    key_type, blob = pinned_key(keys.host_public_line)
    assert key_type == "ssh-ed25519" and len(blob) == 51


def test_config_roundtrip_and_listing(tmp_path: Path) -> None:
    files = instance_files("dev", tmp_path)
    with pytest.raises(NotFound):
        load_config(files)
    save_config(files, VmConfig(name="dev", cpus=3))
    assert load_config(files).cpus == 3
    assert list_instances(tmp_path) == ["dev"]


def test_disk_created_sparse_grown_never_shrunk(tmp_path: Path) -> None:
    disk = tmp_path / "data.qcow2"
    state = ensure_data_disk(disk, 64, "qemu-img")
    assert state.change is DiskChange.CREATED and disk_size(disk, "qemu-img") == 64 * GIB
    assert disk.stat().st_size < 2 * 1024 * 1024  # sparse: metadata only
    assert ensure_data_disk(disk, 64, "qemu-img").change is DiskChange.UNCHANGED
    grown = ensure_data_disk(disk, 80, "qemu-img")
    assert (grown.change, grown.previous_bytes) == (DiskChange.GROWN, 64 * GIB)
    with pytest.raises(InvalidArgument, match="shrinking") as info:
        ensure_data_disk(disk, 10, "qemu-img")
    assert "--disk-size 80" in info.value.hint
    assert disk_size(disk, "qemu-img") == 80 * GIB


def test_parse_http_response() -> None:
    assert parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOKextra") == (
        200, b"OK")
    chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert parse_http_response(chunked) == (404, b"abc")
    with pytest.raises(ChannelError):
        parse_http_response(b"SSH-2.0-OpenSSH\r\n")
