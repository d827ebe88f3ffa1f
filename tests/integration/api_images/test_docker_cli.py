"""The official docker CLI against a real pydeskd: pull (through a mirror), images, tag, rmi,
inspect, history, save | load, import, push, login, image prune."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.support.image_fixtures import CREDENTIALS
from tests.support.images import busybox_rootfs_entries, tar_bytes
from tests.support.pydeskd import Pydeskd
from tests.support.registry import Registry


def out(result: object) -> str:
    return result.stdout.decode()  # type: ignore[attr-defined, no-any-return]


def test_pull_through_the_mirror_then_up_to_date(pydeskd: Pydeskd, mirror: Registry) -> None:
    first = out(pydeskd.docker("pull", "busybox"))
    digest = mirror.pushed["library/busybox:latest"].digest
    assert "latest: Pulling from library/busybox" in first
    assert "Pull complete" in first
    assert f"Digest: {digest}" in first
    assert "Status: Downloaded newer image for busybox:latest" in first
    assert first.rstrip().endswith("docker.io/library/busybox:latest")
    again = out(pydeskd.docker("pull", "busybox:latest"))
    assert "Status: Image is up to date for busybox:latest" in again
    by_digest = out(pydeskd.docker("pull", f"busybox@{digest}"))
    assert f"busybox@{digest}" in by_digest
    quiet = pydeskd.docker("pull", "-q", "alpine")
    assert out(quiet).strip() == "docker.io/library/alpine:latest"


def test_pull_errors_exit_1_with_dockers_message(pydeskd: Pydeskd, mirror: Registry) -> None:
    # (busybox:nosuch would go on from the mirror to Docker Hub, unreachable here.)
    name = mirror.ref("test/nosuch:v1")
    missing = pydeskd.docker("pull", name, check=False)
    assert missing.returncode == 1
    assert f"Error response from daemon: manifest for {name} not found" in \
        missing.stderr.decode()
    bad = pydeskd.docker("pull", "a/B", check=False)
    assert bad.returncode == 1 and "invalid reference format" in bad.stderr.decode()


def test_images_tag_inspect_history_rmi(pydeskd: Pydeskd, mirror: Registry) -> None:
    pydeskd.docker("pull", "-q", "busybox")
    digest = mirror.pushed["library/busybox:latest"].digest
    pydeskd.docker("tag", "busybox", "mine/box:v1")
    rows = out(pydeskd.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"))
    assert sorted(rows.split("\n")[:-1]) == [f"busybox:latest {digest[7:19]}",
                                             f"mine/box:v1 {digest[7:19]}"]
    table = out(pydeskd.docker("images"))
    assert table.startswith("REPOSITORY") and "mine/box" in table
    assert out(pydeskd.docker("images", "-q", "--no-trunc", "busybox")).strip() == digest
    assert out(pydeskd.docker("image", "inspect", "--format", "{{.Id}} {{.Os}}",
                              "mine/box:v1")).strip() == f"{digest} linux"
    inspect = json.loads(out(pydeskd.docker("image", "inspect", "busybox")))[0]
    assert inspect["RepoTags"] == ["busybox:latest", "mine/box:v1"]
    history = out(pydeskd.docker("history", "--format", "{{.ID}}", "busybox")).split()
    assert history[0] == digest[7:19]
    assert out(pydeskd.docker("rmi", "mine/box:v1")).strip() == "Untagged: mine/box:v1"
    conflict = pydeskd.docker("rmi", "nosuch", check=False)
    assert conflict.returncode == 1 and "No such image: nosuch" in conflict.stderr.decode()
    removed = out(pydeskd.docker("rmi", "busybox"))
    assert "Untagged: busybox:latest" in removed and f"Deleted: {digest}" in removed
    assert out(pydeskd.docker("images", "-q")) == ""


def test_save_load_and_import(pydeskd: Pydeskd, tmp_path: Path) -> None:
    pydeskd.docker("pull", "-q", "busybox")
    image_id = out(pydeskd.docker("images", "-q", "--no-trunc", "busybox")).strip()
    archive = tmp_path / "busybox.tar"
    pydeskd.docker("save", "-o", str(archive), "busybox")
    saved = pydeskd.docker("save", "busybox").stdout  # to stdout, as in save | load
    assert saved == archive.read_bytes()
    one = pydeskd.docker("save", "--platform", "linux/amd64", "busybox").stdout
    assert one == saved  # a single-platform image: the same archive
    pydeskd.docker("rmi", "busybox")
    loaded = out(pydeskd.docker("load", input=saved))
    assert loaded.strip().endswith("Loaded image: busybox:latest")
    assert out(pydeskd.docker("images", "-q", "--no-trunc", "busybox")).strip() == image_id
    pydeskd.docker("rmi", "busybox")
    assert "Loaded image: busybox:latest" in out(pydeskd.docker("load", "-i", str(archive)))

    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(tar_bytes(busybox_rootfs_entries()))
    imported = out(pydeskd.docker("import", "-m", "by test", "-c", "ENV X=1", str(rootfs),
                                  "imported/box:v1")).strip()
    assert imported.startswith("sha256:")
    inspect = json.loads(out(pydeskd.docker("image", "inspect", "imported/box:v1")))[0]
    assert inspect["Id"] == imported and "X=1" in inspect["Config"]["Env"]
    assert inspect["Comment"] == "by test"
    from_stdin = pydeskd.docker("import", "-", "imported/stdin", input=rootfs.read_bytes())
    assert out(from_stdin).startswith("sha256:")
    assert "imported/stdin" in out(pydeskd.docker("images"))


def test_push_to_a_registry(pydeskd: Pydeskd, registry: Registry,
                            fresh_registry: Registry) -> None:
    pydeskd.docker("pull", "-q", "busybox")
    target = fresh_registry.ref("test/pushed:v1")
    pydeskd.docker("tag", "busybox", target)
    pushed = out(pydeskd.docker("push", target))
    digest = fresh_registry.manifest_digest("test/pushed:v1")
    assert f"The push refers to repository [{fresh_registry.ref('test/pushed')}]" in pushed
    assert "Pushed" in pushed and f"v1: digest: {digest} size: " in pushed
    again = out(pydeskd.docker("push", target))
    assert "Layer already exists" in again
    missing = pydeskd.docker("push", fresh_registry.ref("test/none:v1"), check=False)
    assert missing.returncode == 1
    assert "An image does not exist locally with the tag" in missing.stderr.decode()


def test_login_then_pull_and_push_with_the_stored_credentials(
        pydeskd: Pydeskd, htpasswd_registry: Registry) -> None:
    host = htpasswd_registry.host
    # (stdin not a terminal: the CLI would offer to log in instead of failing)
    refused = pydeskd.docker("pull", f"{host}/test/single:latest", check=False, input=b"")
    assert refused.returncode == 1
    assert "pull access denied" in refused.stderr.decode()
    wrong = pydeskd.docker("login", "-u", CREDENTIALS[0], "--password-stdin", host,
                           input=b"wrong\n", check=False)
    assert wrong.returncode == 1
    assert f"login attempt to http://{host}/v2/ failed with status: 401 Unauthorized" in \
        wrong.stderr.decode()
    ok = pydeskd.docker("login", "-u", CREDENTIALS[0], "--password-stdin", host,
                        input=CREDENTIALS[1].encode() + b"\n")
    assert "Login Succeeded" in out(ok)
    pulled = out(pydeskd.docker("pull", f"{host}/test/single:latest"))
    assert "Status: Downloaded newer image" in pulled
    pydeskd.docker("tag", f"{host}/test/single:latest", f"{host}/test/mine:v1")
    assert "v1: digest: sha256:" in out(pydeskd.docker("push", f"{host}/test/mine:v1"))


def test_image_prune(pydeskd: Pydeskd) -> None:
    pydeskd.docker("pull", "-q", "busybox")
    pydeskd.docker("pull", "-q", "alpine")
    pydeskd.docker("tag", "alpine", "busybox")  # busybox's image is left dangling
    assert "<none>" in out(pydeskd.docker("images"))
    pruned = out(pydeskd.docker("image", "prune", "-f"))
    assert "deleted: sha256:" in pruned and "Total reclaimed space" in pruned
    assert "<none>" not in out(pydeskd.docker("images"))
    kept = out(pydeskd.docker("image", "prune", "-a", "-f", "--filter", "until=1h"))
    assert "Total reclaimed space: 0B" in kept and "alpine" in out(pydeskd.docker("images"))
    everything = out(pydeskd.docker("image", "prune", "-a", "-f"))
    assert "untagged: alpine:latest" in everything
    assert out(pydeskd.docker("images", "-q")) == ""


def test_docker_py_images(pydeskd: Pydeskd, mirror: Registry) -> None:
    client = pydeskd.client(version="auto")
    image = client.images.pull("busybox", tag="latest")
    digest = mirror.pushed["library/busybox:latest"].digest
    assert image.id == digest and image.tags == ["busybox:latest"]
    assert [i.id for i in client.images.list()] == [digest]
    assert client.images.get("busybox").attrs["Os"] == "linux"
    assert image.tag("pyimage", "v2") is True
    assert sorted(client.images.get(digest).tags) == ["busybox:latest", "pyimage:v2"]
    registry_data = client.images.get_registry_data("busybox")
    assert registry_data.id == digest and registry_data.has_platform("linux/amd64")
    client.images.remove("pyimage:v2")
    client.images.remove("busybox", force=True)
    assert client.images.list() == []


def test_image_events(pydeskd: Pydeskd, mirror: Registry, tmp_path: Path) -> None:
    since = str(int(time.time()) - 1)
    pydeskd.docker("pull", "-q", "busybox")
    image_id = mirror.pushed["library/busybox:latest"].digest
    pydeskd.docker("tag", "busybox", "ev:v1")
    pydeskd.docker("save", "-o", str(tmp_path / "ev.tar"), "ev:v1")
    pydeskd.docker("rmi", "ev:v1", "busybox")
    pydeskd.docker("load", "-q", "-i", str(tmp_path / "ev.tar"))
    until = str(int(time.time()) + 1)
    shown = out(pydeskd.docker("events", "--since", since, "--until", until,
                               "--filter", "type=image", "--format",
                               "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}"))
    assert shown.splitlines() == [
        "pull busybox:latest busybox",
        f"tag {image_id} ev:v1",
        f"save {image_id} ev:v1",
        f"untag {image_id} ev:v1",
        f"untag {image_id} busybox:latest",
        f"delete {image_id} {image_id}",
        f"load {image_id} ev:v1",
    ]


def test_parallel_pulls_of_one_image(pydeskd: Pydeskd, mirror: Registry) -> None:
    procs = [pydeskd.popen_docker("pull", "busybox", stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for _ in range(4)]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], results
    digest = mirror.pushed["library/busybox:latest"].digest
    assert all(f"Digest: {digest}" in stdout.decode() for stdout, _ in results)
    assert out(pydeskd.docker("images", "-q", "--no-trunc")).split() == [digest]
