"""The create rewriter: binds, mounts, the Docker socket rule, port bindings and their label."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pydesk.proxy.labels import HOST_PORT_BINDINGS_LABEL
from pydesk.proxy.rewrite import RewriteError, rewrite_create, rewrite_create_body
from pydesk.sync.errors import HostPathNotFound
from pydeskd.vmcontract import GUEST_API_SOCKET


class Resolver:
    def __init__(self, fail: Exception | None = None) -> None:
        self.asked: list[str] = []
        self.create: list[bool] = []
        self.fail = fail

    def guest_path(self, host_path: str, *, create: bool = False) -> str:
        self.asked.append(host_path)
        self.create.append(create)
        if self.fail is not None:
            raise self.fail
        return "/var/lib/pydesk/sync/abc" + host_path


def create(**host_config: Any) -> dict[str, Any]:
    return {"Image": "busybox", "Cmd": ["true"], "HostConfig": host_config}


def without_label(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` less the label the proxy stamps on every create (and Labels if it held only it)."""
    labels = {k: v for k, v in (out.get("Labels") or {}).items() if k != HOST_PORT_BINDINGS_LABEL}
    rest = {k: v for k, v in out.items() if k != "Labels"}
    return {**rest, "Labels": labels} if labels else rest


@pytest.mark.parametrize(("bind", "expected"), [
    ("/home/u/src:/app", "/var/lib/pydesk/sync/abc/home/u/src:/app"),
    ("/home/u/src:/app:ro", "/var/lib/pydesk/sync/abc/home/u/src:/app:ro"),
    ("/home/u/src:/app:ro,z", "/var/lib/pydesk/sync/abc/home/u/src:/app:ro,z"),
    ("/home/u/f.conf:/etc/f.conf:Z", "/var/lib/pydesk/sync/abc/home/u/f.conf:/etc/f.conf:Z"),
    ("named:/data", "named:/data"),
    ("my_vol.1:/data:ro", "my_vol.1:/data:ro"),
    ("/anonymous", "/anonymous"),
])
def test_binds(bind: str, expected: str) -> None:
    resolver = Resolver()
    out = rewrite_create(create(Binds=[bind]), resolver)
    assert out["HostConfig"]["Binds"] == [expected]
    assert resolver.asked == ([bind.partition(":")[0]] if bind.startswith("/") and ":" in bind
                              else [])


@pytest.mark.parametrize(("bind", "words"), [
    ("C:\\Users\\me:/app", "Windows"),
    ("C:/Users/me:/app", "Windows"),
    ("\\\\server\\share:/app", "Windows"),
    ("./src:/app", "neither an absolute path nor a volume name"),
    ("src/dir:/app", "neither an absolute path nor a volume name"),
    ("/a:/b:ro:extra", "SOURCE:TARGET"),
    (":/app", "SOURCE:TARGET"),
])
def test_binds_rejected_clearly(bind: str, words: str) -> None:
    with pytest.raises(RewriteError) as err:
        rewrite_create(create(Binds=[bind]), Resolver())
    assert err.value.status == 400
    assert words in err.value.message and repr(bind) in err.value.message


def test_mounts_bind_only() -> None:
    mounts = [{"Type": "bind", "Source": "/srv/site", "Target": "/www", "ReadOnly": True,
               "BindOptions": {"Propagation": "rprivate"}},
              {"Type": "volume", "Source": "vol", "Target": "/v"},
              {"Type": "tmpfs", "Target": "/t"}]
    out = rewrite_create(create(Mounts=mounts), Resolver())
    assert out["HostConfig"]["Mounts"] == [
        {**mounts[0], "Source": "/var/lib/pydesk/sync/abc/srv/site"}, mounts[1], mounts[2]]
    with pytest.raises(RewriteError, match="needs a Source"):
        rewrite_create(create(Mounts=[{"Type": "bind", "Target": "/x"}]), Resolver())
    with pytest.raises(RewriteError, match="not an absolute path"):
        rewrite_create(create(Mounts=[{"Type": "bind", "Source": "rel", "Target": "/x"}]),
                       Resolver())


@pytest.mark.parametrize("sock", ["/var/run/docker.sock", "/run/docker.sock",
                                  "/home/u/.pydesk/run/docker.sock"])
def test_docker_socket_becomes_the_guest_daemons(sock: str) -> None:
    resolver = Resolver()
    body = create(Binds=[f"{sock}:/var/run/docker.sock"],
                  Mounts=[{"Type": "bind", "Source": sock, "Target": "/s"}])
    out = rewrite_create(body, resolver, own_sockets=("/home/u/.pydesk/run/docker.sock",))
    assert out["HostConfig"]["Binds"] == [f"{GUEST_API_SOCKET}:/var/run/docker.sock"]
    assert out["HostConfig"]["Mounts"][0]["Source"] == GUEST_API_SOCKET
    assert resolver.asked == []
    # Without a resolver too (the socket is not a synced path).
    assert rewrite_create(body, None, ("/home/u/.pydesk/run/docker.sock",)
                          )["HostConfig"]["Binds"][0].startswith(GUEST_API_SOCKET)


def test_no_resolver_leaves_paths() -> None:
    body = create(Binds=["/host:/c"], Mounts=[{"Type": "bind", "Source": "/h", "Target": "/t"}])
    assert without_label(rewrite_create(body, None)) == body


def test_resolver_errors_keep_message_and_status() -> None:
    with pytest.raises(RewriteError) as err:
        rewrite_create(create(Binds=["/gone:/c"]), Resolver(FileNotFoundError("no /gone")))
    assert (err.value.status, err.value.message) == (400, "no /gone")

    class SyncFailed(Exception):
        status = 503
        hint = "pydesk doctor"

    with pytest.raises(RewriteError) as err:
        rewrite_create(create(Binds=["/h:/c"]), Resolver(SyncFailed("sync broke")))
    assert (err.value.status, err.value.message) == (503, "sync broke (pydesk doctor)")
    with pytest.raises(RewriteError) as err:
        rewrite_create(create(Binds=["/h:/c"]), Resolver(RuntimeError("boom")))
    assert err.value.status == 500


def test_port_bindings_go_to_the_guest_address_and_the_label() -> None:
    bindings = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"},
                           {"HostIp": "::", "HostPort": "5353"}],
                "9000/tcp": [{"HostPort": ""}]}
    body = create(PortBindings=bindings)
    body["Labels"] = {"app": "web"}
    out = rewrite_create(body, None)
    assert out["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "", "HostPort": "5353"}],  # one publish in the guest
        "9000/tcp": [{"HostIp": "", "HostPort": ""}]}
    assert out["Labels"]["app"] == "web"
    assert json.loads(out["Labels"][HOST_PORT_BINDINGS_LABEL]) == bindings
    # the input is not changed in place
    assert body["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"] == "127.0.0.1"
    assert HOST_PORT_BINDINGS_LABEL not in body["Labels"]


def test_ephemeral_port_bindings_stay_distinct() -> None:
    bindings = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""},
                           {"HostIp": "127.0.0.2", "HostPort": ""}]}
    out = rewrite_create(create(PortBindings=bindings), None)
    assert out["HostConfig"]["PortBindings"]["80/tcp"] == [{"HostIp": "", "HostPort": ""}] * 2


def test_no_port_bindings_still_stamps_an_empty_label() -> None:
    # Finding 4: an image's LABEL of the same name must never reach the container, so the
    # proxy stamps it on every create ({}: no bindings); the container's label wins the merge.
    for body in (create(), create(PortBindings={}), create(PortBindings=None),
                 {"Image": "busybox"}, {"Image": "busybox", "Labels": None},
                 create(PublishAllPorts=True, PortBindings={})):
        out = rewrite_create(body, None)
        assert out["Labels"] == {HOST_PORT_BINDINGS_LABEL: "{}"}
        assert without_label(out) == {k: v for k, v in body.items() if k != "Labels"}


def test_users_own_label_of_that_name_is_replaced() -> None:
    body = create(PortBindings={"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})
    body["Labels"] = {HOST_PORT_BINDINGS_LABEL: '{"80/tcp": [{"HostIp": "0.0.0.0"}]}', "a": "b"}
    out = rewrite_create(body, None)
    assert json.loads(out["Labels"][HOST_PORT_BINDINGS_LABEL]) == \
        {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert out["Labels"]["a"] == "b"


def test_other_fields_untouched() -> None:
    body = create(Binds=["/h:/c"], Memory=1 << 20, NetworkMode="bridge")
    body.update(Env=["A=1"], Volumes={"/data": {}}, Labels=None)
    out = rewrite_create(body, Resolver())
    assert {k: v for k, v in out.items() if k not in ("HostConfig", "Labels")} == \
        {k: v for k, v in body.items() if k not in ("HostConfig", "Labels")}
    assert out["HostConfig"]["Memory"] == 1 << 20


def test_body_on_the_wire() -> None:
    raw = json.dumps(create(Binds=["/h:/c"])).encode()
    assert json.loads(rewrite_create_body(raw, Resolver()))["HostConfig"]["Binds"] == \
        ["/var/lib/pydesk/sync/abc/h:/c"]
    for odd in (b"", b"not json", b"[1, 2]", b"null"):
        assert rewrite_create_body(odd, Resolver()) == odd


# --- finding 9: a missing bind source is created as dockerd does ------------------------------

class CreatingResolver:
    """A resolver that takes ``create`` (SyncManager's signature): ``missing`` paths exist only
    once created; records (path, create) per call."""

    def __init__(self, missing: set[str]) -> None:
        self.missing = set(missing)
        self.calls: list[tuple[str, bool]] = []

    def guest_path(self, host_path: str, *, create: bool = False) -> str:
        self.calls.append((host_path, create))
        if host_path in self.missing:
            if not create:
                raise HostPathNotFound(f"bind source path does not exist: {host_path}",
                                       "create it first")
            self.missing.discard(host_path)
        return "/g" + host_path


def bind_mount(source: str, **options: Any) -> dict[str, Any]:
    mount: dict[str, Any] = {"Type": "bind", "Source": source, "Target": "/t"}
    if options:
        mount["BindOptions"] = options
    return mount


def test_binds_create_a_missing_source() -> None:
    resolver = CreatingResolver({"/h/data"})
    out = rewrite_create(create(Binds=["/h/data:/var/lib/mysql", "/h/x:/x:ro", "vol:/v"]),
                         resolver)
    assert out["HostConfig"]["Binds"] == ["/g/h/data:/var/lib/mysql", "/g/h/x:/x:ro", "vol:/v"]
    assert resolver.calls == [("/h/data", True), ("/h/x", True)]
    assert resolver.missing == set()


def test_mounts_create_only_with_create_mountpoint() -> None:
    resolver = CreatingResolver({"/h/data"})
    out = rewrite_create(create(Mounts=[bind_mount("/h/data", CreateMountpoint=True)]), resolver)
    assert out["HostConfig"]["Mounts"][0]["Source"] == "/g/h/data"
    assert resolver.calls == [("/h/data", True)]
    # without it (or with it false), nothing is created and dockerd's error is kept
    for options in ({}, {"CreateMountpoint": False}, {"Propagation": "rprivate"}):
        resolver = CreatingResolver({"/h/gone"})
        with pytest.raises(RewriteError) as err:
            rewrite_create(create(Mounts=[bind_mount("/h/gone", **options)]), resolver)
        assert err.value.status == 400
        assert err.value.message == ('invalid mount config for type "bind": bind source path '
                                     "does not exist: /h/gone")
        assert resolver.calls == [("/h/gone", False)] and resolver.missing == {"/h/gone"}


def test_mount_of_a_missing_path_through_a_plain_resolver_keeps_dockerds_error() -> None:
    with pytest.raises(RewriteError) as err:
        rewrite_create(create(Mounts=[bind_mount("/h/gone")]),
                       Resolver(FileNotFoundError("no such path")))
    assert (err.value.status, err.value.message) == (
        400, 'invalid mount config for type "bind": bind source path does not exist: /h/gone')


def test_a_resolver_that_cannot_create_is_heard() -> None:
    # create asked, yet the resolver still says "missing": its own message, 400
    resolver = Resolver()
    rewrite_create(create(Binds=["/h:/c"], Mounts=[bind_mount("/m", CreateMountpoint=True),
                                                   bind_mount("/n")]), resolver)
    assert (resolver.asked, resolver.create) == (["/h", "/m", "/n"], [True, True, False])
    with pytest.raises(RewriteError) as err:
        rewrite_create(create(Binds=["/h/gone:/c"]),
                       Resolver(HostPathNotFound("bind source path does not exist: /h/gone",
                                                 "create it")))
    assert (err.value.status, err.value.message) == (
        400, "bind source path does not exist: /h/gone (create it)")


def test_create_failure_goes_to_the_client() -> None:
    class Refusing(CreatingResolver):
        def guest_path(self, host_path: str, *, create: bool = False) -> str:
            raise PermissionError(f"cannot create {host_path}: permission denied")

    with pytest.raises(RewriteError) as err:
        rewrite_create(create(Binds=["/root/x:/x"]), Refusing(set()))
    assert (err.value.status, err.value.message) == (
        400, "cannot create /root/x: permission denied")
