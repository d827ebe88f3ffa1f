"""The docker CLI's context store written by pydesk.dockercontext (files only, no docker CLI)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pydesk import dockercontext as dc


def test_config_dir_follows_docker_config_else_home(tmp_path: Path) -> None:
    assert dc.docker_config_dir({"DOCKER_CONFIG": "/x/cfg"}, tmp_path) == Path("/x/cfg")
    assert dc.docker_config_dir({}, tmp_path) == tmp_path / ".docker"


def test_write_creates_meta_json_under_the_names_sha256(tmp_path: Path) -> None:
    path = dc.write_context(tmp_path, "unix:///h/.pydesk/run/docker.sock")
    digest = hashlib.sha256(b"pydesk").hexdigest()
    assert path == tmp_path / "contexts" / "meta" / digest / "meta.json"
    assert json.loads(path.read_text()) == {
        "Name": "pydesk", "Metadata": {"Description": dc.DESCRIPTION},
        "Endpoints": {"docker": {"Host": "unix:///h/.pydesk/run/docker.sock",
                                 "SkipTLSVerify": False}}}
    assert dc.read_context(tmp_path) == dc.DockerContext("pydesk",
                                                         "unix:///h/.pydesk/run/docker.sock",
                                                         dc.DESCRIPTION)


def test_update_rewrites_the_host_and_never_touches_the_current_context(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"auths": {"r": {"auth": "x"}}}')
    dc.write_context(tmp_path, "unix:///a.sock")
    dc.write_context(tmp_path, "unix:///b.sock")
    context = dc.read_context(tmp_path)
    assert context is not None and context.host == "unix:///b.sock"
    assert json.loads((tmp_path / "config.json").read_text()) == {"auths": {"r": {"auth": "x"}}}
    assert dc.current_context(tmp_path) == "default"


def test_use_keeps_every_other_key_and_is_private(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"auths": {}, "currentContext": "other", "x": 1}')
    dc.use_context(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data == {"auths": {}, "currentContext": "pydesk", "x": 1}
    assert (tmp_path / "config.json").stat().st_mode & 0o077 == 0
    dc.use_context(tmp_path, "default")
    assert "currentContext" not in json.loads((tmp_path / "config.json").read_text())


def test_use_creates_config_json_when_absent(tmp_path: Path) -> None:
    dc.use_context(tmp_path / "new")
    assert dc.current_context(tmp_path / "new") == "pydesk"


def test_remove_resets_the_current_context_only_when_it_was_pydesk(tmp_path: Path) -> None:
    assert dc.remove_context(tmp_path) is False
    dc.write_context(tmp_path, "unix:///a.sock")
    (tmp_path / "config.json").write_text('{"currentContext": "work"}')
    assert dc.remove_context(tmp_path) is True
    assert dc.read_context(tmp_path) is None
    assert not dc.meta_file(tmp_path).parent.exists()
    assert dc.current_context(tmp_path) == "work"
    dc.write_context(tmp_path, "unix:///a.sock")
    dc.use_context(tmp_path)
    dc.remove_context(tmp_path)
    assert dc.current_context(tmp_path) == "default"


def test_damaged_files_are_value_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        dc.current_context(tmp_path)
    meta = dc.meta_file(tmp_path)
    meta.parent.mkdir(parents=True)
    meta.write_text('{"Name": "pydesk", "Endpoints": {}}')
    with pytest.raises(ValueError, match="no docker endpoint"):
        dc.read_context(tmp_path)
