"""DaemonConfig: dockerd's flags merged with daemon.json, and dockerd's refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pydeskd.daemon.config import (
    DEFAULT_DATA_ROOT,
    DEFAULT_HOST,
    ConfigError,
    DaemonConfig,
    RuntimeConfig,
    parse_size,
)


def load(tmp_path: Path, args: list[str], file: Any = None) -> DaemonConfig:
    path = tmp_path / "daemon.json"
    if file is not None:
        path.write_text(file if isinstance(file, str) else json.dumps(file))
    return DaemonConfig.load(["--config-file", str(path), *args])


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, [])
    assert config.hosts == (DEFAULT_HOST,)
    assert config.data_root == DEFAULT_DATA_ROOT
    assert config.default_runtime == "runc"
    assert config.runtimes["runc"] == RuntimeConfig("pydesk-runc")
    assert config.log.driver == "json-file" and config.pidfile is None


def test_flags(tmp_path: Path) -> None:
    config = load(tmp_path, ["-H", "unix:///tmp/a.sock", "-H", "tcp://127.0.0.1:2375",
                             "--data-root", "/d", "--exec-root", "/e", "--pidfile", "/p.pid",
                             "--log-level", "debug", "--debug"])
    assert config.hosts == ("unix:///tmp/a.sock", "tcp://127.0.0.1:2375")
    assert config.unix_sockets == [Path("/tmp/a.sock")]
    assert config.tcp_hosts == [("127.0.0.1", 2375)]
    assert (config.data_root, config.exec_root) == (Path("/d"), Path("/e"))
    assert config.pidfile == Path("/p.pid") and config.debug and config.log_level == "debug"
    assert config.images_root == Path("/d/images")


def test_file_keys(tmp_path: Path) -> None:
    config = load(tmp_path, [], {
        "registry-mirrors": ["http://127.0.0.1:5000"],
        "insecure-registries": ["10.0.0.0/8", "reg:5000"],
        "data-root": "/srv/pydesk",
        "exec-root": "/run/x",
        "default-runtime": "crun",
        "runtimes": {"crun": {"path": "/usr/bin/crun", "runtimeArgs": ["--debug"]}},
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
        "hosts": ["unix:///tmp/b.sock"],
        "debug": True,
        "log-level": "warn",
    })
    assert config.registry_mirrors == ("http://127.0.0.1:5000",)
    assert config.insecure_registries == ("10.0.0.0/8", "reg:5000")
    assert config.data_root == Path("/srv/pydesk") and config.exec_root == Path("/run/x")
    assert config.default_runtime == "crun"
    assert config.runtimes["crun"] == RuntimeConfig("/usr/bin/crun", ("--debug",))
    assert "runc" in config.runtimes  # the built-in stays
    assert config.log.max_size == 10 << 20 and config.log.max_file == 3
    assert config.hosts == ("unix:///tmp/b.sock",)
    assert config.debug and config.log_level == "warn"


@pytest.mark.parametrize(("args", "file", "message"), [
    ([], "{not json", "unable to configure the daemon with file"),
    ([], "[1, 2]", "top level must be a JSON object"),
    ([], {"colour": "blue"}, "don't match any configuration option: colour"),
    ([], {"debug": "yes"}, "debug must be a bool"),
    ([], {"registry-mirrors": "http://x"}, "registry-mirrors must be a list"),
    (["--debug"], {"debug": False},
     "specified both as a flag and in the configuration file: debug: (from flag: true, "
     "from file: false)"),
    (["--data-root", "/a"], {"data-root": "/b"}, "data-root: (from flag: /a, from file: /b)"),
    (["-H", "unix:///a"], {"hosts": ["unix:///b"]}, "hosts"),
    ([], {"default-runtime": "crun"}, "default runtime 'crun' is not among"),
    ([], {"runtimes": {"crun": {"bin": "/x"}}}, "runtime 'crun' wants"),
    ([], {"log-opts": {"max-size": "huge"}}, "invalid size"),
    ([], {"log-opts": {"max-file": "0"}}, "max-file"),
    ([], {"log-opts": {"colour": "x"}}, "unknown log opt 'colour'"),
    ([], {"log-driver": "syslog"}, "unknown log driver"),
    ([], {"hosts": ["tcp://0.0.0.0:2375"]}, "loopback"),
    ([], {"log-level": "chatty"}, "invalid log level"),
])
def test_refusals(tmp_path: Path, args: list[str], file: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, args, file)
    assert message in str(caught.value)


def test_unknown_flag_exits(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        load(tmp_path, ["--frobnicate"])


@pytest.mark.parametrize(("text", "size"), [("10m", 10 << 20), ("512k", 512 << 10),
                                            ("1g", 1 << 30), ("100", 100), ("1.5k", 1536)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, [])
    with pytest.raises(AttributeError):
        config.debug = True  # type: ignore[misc]


def test_runtime_lookup(tmp_path: Path) -> None:
    from pydeskd.containerd.errors import InvalidArgument
    config = load(tmp_path, [], {"runtimes": {"crun": {"path": "/usr/bin/crun"}}})
    assert config.runtime() == RuntimeConfig("pydesk-runc")
    assert config.runtime("crun").path == "/usr/bin/crun"
    with pytest.raises(InvalidArgument, match="unknown or invalid runtime name: kata"):
        config.runtime("kata")


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        DaemonConfig.load(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("pydeskd version ")


def test_cgroup_parent_from_flag_or_file(tmp_path: Path) -> None:
    assert load(tmp_path, []).cgroup_parent == "/pydesk"
    assert load(tmp_path, ["--cgroup-parent", "ci/run-1"]).cgroup_parent == "/ci/run-1"
    assert load(tmp_path, [], {"cgroup-parent": "/mine"}).cgroup_parent == "/mine"
    with pytest.raises(ConfigError, match="invalid cgroup-parent"):
        load(tmp_path, [], {"cgroup-parent": "/a/../../b"})
    with pytest.raises(ConfigError, match="both as a flag and in the configuration file"):
        load(tmp_path, ["--cgroup-parent", "x"], {"cgroup-parent": "/y"})


def test_init_path_configured_or_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydeskd.daemon import config as config_module

    assert load(tmp_path, ["--init-path", "/opt/tini"]).init_path == Path("/opt/tini")
    fake = tmp_path / "tini-static"
    fake.write_text("")
    monkeypatch.setattr(config_module, "INIT_CANDIDATES", (tmp_path / "none", fake))
    assert load(tmp_path, []).init_path == fake
    monkeypatch.setattr(config_module, "INIT_CANDIDATES", (tmp_path / "none",))
    assert load(tmp_path, []).init_path is None
