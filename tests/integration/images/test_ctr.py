"""pydesk-ctr, the image service's command line: the daily path and a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeskd.containerd.ctr import main
from tests.support.registry import Registry

pytestmark = pytest.mark.integration


def test_pull_images_mount_save_load_rmi(registry: Registry, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(tmp_path / "root")]
    ref = registry.ref("test/multiplatform:latest")
    assert main([*root, "pull", "--platform", "linux/arm64", ref]) == 0
    out = capsys.readouterr().out
    assert "Status: Downloaded newer image" in out
    assert main([*root, "images"]) == 0
    assert "linux/arm64" in capsys.readouterr().out
    target = tmp_path / "mnt"
    target.mkdir()
    assert main([*root, "mount", ref, str(target)]) == 1  # the host's platform is not there
    assert "no matching manifest for linux/amd64" in capsys.readouterr().err
    assert main([*root, "mount", "--platform", "linux/arm64", ref, str(target)]) == 0
    try:
        assert (target / "etc/platform").read_text().startswith("linux/arm64")
    finally:
        assert main([*root, "umount", str(target)]) == 0
    assert not (target / "etc").exists()
    assert main([*root, "save", "-o", str(tmp_path / "saved.tar"), ref]) == 0
    other = ["--root", str(tmp_path / "other")]
    assert main([*other, "load", "-i", str(tmp_path / "saved.tar")]) == 0
    assert "Loaded image: " in capsys.readouterr().out
    assert main([*root, "rmi", ref]) == 0
    assert "Untagged: " in capsys.readouterr().out


def test_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "pull", "127.0.0.1:1/nothing"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pydesk-ctr: ") and "connection refused" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["--root", str(tmp_path), "rmi", "nothing:here"]) == 1
    assert "No such image: nothing:here" in capsys.readouterr().err
