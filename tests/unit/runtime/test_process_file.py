"""pydesk-runc exec --process: the runtime-spec JSON, or the shim's marshal form of it."""

from __future__ import annotations

import json
import marshal
from pathlib import Path

import pytest

from pydeskd.runtime.errors import SpecError
from pydeskd.runtime.exec import load_process_file
from pydeskd.shim.runtime import Runtime

PROCESS = {"args": ["sh", "-c", "true"], "cwd": "/", "env": ["A=b"],
           "user": {"uid": 0, "gid": 0}, "terminal": False}


def test_json_and_marshal_files_give_the_same_process(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(PROCESS))
    (tmp_path / "p.marshal").write_bytes(marshal.dumps(PROCESS))
    assert load_process_file(str(tmp_path / "p.json")) == \
        load_process_file(str(tmp_path / "p.marshal"))


def test_a_bad_marshal_file_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "p.marshal").write_bytes(b"\x00garbage")
    with pytest.raises(SpecError, match="--process"):
        load_process_file(str(tmp_path / "p.marshal"))


def test_only_pydesk_runc_gets_the_marshal_form(tmp_path: Path) -> None:
    assert Runtime(tmp_path / "pydesk-runc", tmp_path, tmp_path / "log").fast_process_files
    assert not Runtime(Path("/usr/sbin/runc"), tmp_path, tmp_path / "log").fast_process_files
