"""The exit code of an exec that could not start, by dockerd's rules."""

from __future__ import annotations

import pytest

from pydeskd.daemon.containers.execs import start_failure_exit_code


@pytest.mark.parametrize(("cmd", "message", "code"), [
    # The command itself is missing: 127.
    ("/no/such/binary", 'exec failed: exec "/no/such/binary": no such file or directory', 127),
    ("nosuchcmd", 'exec: "nosuchcmd": executable file not found in $PATH', 127),
    # Something else is missing (docker exec -w /missing): 126, as Docker.
    ("true", 'chdir to cwd "/missing": no such file or directory', 126),
    ("sh", "exec /bin/sh: permission denied", 126),
    ("true", "the container is paused", 126),
])
def test_exit_codes(cmd: str, message: str, code: int) -> None:
    assert start_failure_exit_code(cmd, message) == code
