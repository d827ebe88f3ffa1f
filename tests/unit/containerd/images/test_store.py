"""The image store: containerd records with Docker 29's tag/untag/dangling/rmi semantics."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeskd.containerd import oci
from pydeskd.containerd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from pydeskd.containerd.images import (
    ContainerUse,
    DeleteItem,
    Image,
    ImageStore,
    dangling_name,
    normalize_name,
)

pytestmark = pytest.mark.unit


def desc(seed: str, media_type: str = oci.OCI_MANIFEST) -> oci.Descriptor:
    return oci.Descriptor(media_type, "sha256:" + hashlib.sha256(seed.encode()).hexdigest(), 100)


A, B, C = desc("a"), desc("b"), desc("c")
BUSYBOX = "docker.io/library/busybox:latest"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    s = ImageStore(tmp_path / "images")
    yield s
    s.close()


def names(store: ImageStore) -> list[str]:
    return [i.name for i in store.all()]


def test_create_get_update_delete(store: ImageStore) -> None:
    created = store.create(Image(BUSYBOX, A, {"k": "v"}))
    assert created.created_at > 0 and created.updated_at >= created.created_at
    assert store.get(BUSYBOX) == created
    assert store.get(BUSYBOX).id == A.digest
    with pytest.raises(AlreadyExists):
        store.create(Image(BUSYBOX, B))
    updated = store.update(Image(BUSYBOX, B, {"x": "y"}), ["labels.x"])
    assert updated.target == A and updated.labels == {"k": "v", "x": "y"}
    updated = store.update(Image(BUSYBOX, B, {}), ["target"])
    assert updated.target == B and updated.created_at == created.created_at
    with pytest.raises(InvalidArgument):
        store.update(Image(BUSYBOX, B), ["name"])
    store.delete(BUSYBOX)
    with pytest.raises(NotFound):
        store.get(BUSYBOX)
    with pytest.raises(NotFound):
        store.delete(BUSYBOX)


def test_names_must_be_normalized(store: ImageStore) -> None:
    with pytest.raises(InvalidArgument):
        store.create(Image("busybox", A))
    with pytest.raises(InvalidArgument):
        store.create(Image(dangling_name(B.digest), A))
    assert normalize_name("busybox") == BUSYBOX


def test_persists_across_reopen(tmp_path: Path) -> None:
    s = ImageStore(tmp_path)
    s.put("busybox", A, {"l": "1"})
    s.tag("busybox", "me/app:v1")
    s.close()
    s = ImageStore(tmp_path)
    assert names(s) == [BUSYBOX, "docker.io/me/app:v1"]
    assert s.get(BUSYBOX).labels == {"l": "1"}
    assert s.get(BUSYBOX).target == A
    s.close()


def test_failed_transaction_changes_nothing(store: ImageStore) -> None:
    store.put("busybox", A)
    with pytest.raises(RuntimeError), store._tx():
        store.delete(BUSYBOX)
        raise RuntimeError("crash in the middle")
    assert names(store) == [BUSYBOX]


def test_resolve_forms(store: ImageStore) -> None:
    store.put("busybox", A)
    store.put(f"busybox@{B.digest}", B)
    assert store.resolve("busybox").id == A.digest
    assert store.resolve("busybox:latest").id == A.digest
    assert store.resolve("docker.io/library/busybox").id == A.digest
    assert store.resolve(A.digest).id == A.digest
    assert store.resolve(A.digest[7:]).id == A.digest
    assert store.resolve(A.digest[7:19]).id == A.digest
    assert store.resolve(f"busybox@{B.digest}").id == B.digest
    # name@digest with no record of that spelling: the repository's image with that target
    assert store.resolve(f"busybox:latest@{A.digest}").id == A.digest
    with pytest.raises(NotFound, match="No such image: nope"):
        store.resolve("nope")
    with pytest.raises(NotFound):
        store.resolve(f"other@{A.digest}")
    # An ID that is not there is "No such image", not a malformed name (64 hex is no name).
    with pytest.raises(NotFound, match="No such image"):
        store.resolve(C.digest[7:])
    with pytest.raises(InvalidArgument, match="must be lowercase"):
        store.resolve("Busybox")


def test_ambiguous_prefix(store: ImageStore) -> None:
    # Find two digests sharing a first hex digit.
    seeds = [desc(str(i)) for i in range(40)]
    first = seeds[0]
    twin = next(d for d in seeds[1:] if d.digest[7] == first.digest[7])
    store.put("one", first)
    store.put("two", twin)
    with pytest.raises(InvalidArgument, match="multiple IDs found with provided prefix"):
        store.resolve(first.digest[7])
    assert store.resolve(first.digest[7:20]).id == first.digest


def test_tag_moves_and_leaves_dangling(store: ImageStore) -> None:
    store.put("busybox", A)
    store.tag("busybox", "busybox:1.36")
    store.put("other", B)
    # Moving busybox:latest to B: A still has busybox:1.36, so nothing dangles.
    store.tag("other", "busybox")
    assert store.get(BUSYBOX).id == B.digest
    assert not store.list({"dangling": ["true"]})
    # Moving the last name off A leaves A dangling (<none>:<none>).
    store.tag("other", "busybox:1.36")
    dangling = store.list({"dangling": ["true"]})
    assert [i.name for i in dangling] == [dangling_name(A.digest)]
    assert dangling[0].familiar == "<none>:<none>"
    # Naming a dangling image again removes its dangling record.
    store.tag(A.digest, "again")
    assert not store.list({"dangling": ["true"]})
    with pytest.raises(InvalidArgument):
        store.tag("again", f"x@{A.digest}")
    with pytest.raises(NotFound):
        store.tag("missing", "x")


def test_put_unnamed(store: ImageStore) -> None:
    image = store.put(None, C)
    assert image.dangling and store.resolve(C.digest[7:15]).id == C.digest
    store.put("named", C)
    assert names(store) == ["docker.io/library/named:latest"]
    assert store.put(None, C).name == "docker.io/library/named:latest"


def test_remove_by_name_keeps_image_with_other_names(store: ImageStore) -> None:
    store.put("busybox", A)
    store.tag("busybox", "mine")
    assert store.remove("busybox") == [DeleteItem(untagged="busybox:latest")]
    assert names(store) == ["docker.io/library/mine:latest"]
    # Even when in use: only the name goes.
    store.tag("mine", "busybox")
    assert store.remove("busybox", in_use=lambda d: True) == [
        DeleteItem(untagged="busybox:latest")]


def test_remove_last_name_deletes(store: ImageStore) -> None:
    store.put("busybox", A)
    out = store.remove("busybox")
    assert [o.to_json() for o in out] == [{"Untagged": "busybox:latest"}, {"Deleted": A.digest}]
    assert names(store) == []


def test_remove_by_id_multiple_repositories(store: ImageStore) -> None:
    store.put("busybox", A)
    store.tag("busybox", "mine")
    with pytest.raises(FailedPrecondition, match=(
            rf"conflict: unable to delete {A.digest[7:19]} \(must be forced\) - image is"
            " referenced in multiple repositories")):
        store.remove(A.digest[7:19])
    out = store.remove(A.digest[7:19], force=True)
    assert out == [DeleteItem(untagged="busybox:latest"), DeleteItem(untagged="mine:latest"),
                   DeleteItem(deleted=A.digest)]
    assert names(store) == []


def test_remove_by_name_takes_digest_names_of_its_repository(store: ImageStore) -> None:
    # A tag plus a digest name of the same repository: "the same reference" (moby's
    # getSameReferences), so rmi by the tag deletes the image.
    store.put("busybox", A)
    store.put(f"busybox@{A.digest}", A)
    out = store.remove("busybox")
    assert out == [DeleteItem(untagged="busybox:latest"),
                   DeleteItem(untagged=f"busybox@{A.digest}"), DeleteItem(deleted=A.digest)]
    assert names(store) == []


def test_remove_by_name_keeps_digest_names_when_another_tag_exists(store: ImageStore) -> None:
    store.put("busybox", A)
    store.tag("busybox", "busybox:1.36")
    store.put(f"busybox@{A.digest}", A)
    assert store.remove("busybox") == [DeleteItem(untagged="busybox:latest")]
    assert names(store) == ["docker.io/library/busybox:1.36",
                            f"docker.io/library/busybox@{A.digest}"]
    # Pinned by digest: every name of the repository with that target goes.
    assert store.remove(f"busybox@{A.digest}")[-1] == DeleteItem(deleted=A.digest)
    assert names(store) == []


def test_remove_by_id_with_two_names_of_one_repository(store: ImageStore) -> None:
    store.put("busybox", A)
    store.put(f"busybox@{A.digest}", A)
    with pytest.raises(FailedPrecondition, match="referenced in multiple repositories"):
        store.remove(A.digest)


def test_remove_by_id_forced_while_a_stopped_container_uses_it(store: ImageStore) -> None:
    store.put("busybox", A)
    out = store.remove(A.digest, force=True, in_use=lambda d: True)
    assert out == [DeleteItem(untagged="busybox:latest"), DeleteItem(deleted=A.digest)]
    assert names(store) == []


def test_remove_in_use(store: ImageStore) -> None:
    store.put("busybox", A)
    stopped = ContainerUse("c0ffee" * 10, running=False)
    with pytest.raises(FailedPrecondition, match=(
            r"conflict: unable to delete busybox:latest \(must be forced\) - container"
            f" c0ffeec0ffee is using its referenced image {A.digest[7:19]}")):
        store.remove("busybox", in_use=lambda d: stopped)
    with pytest.raises(FailedPrecondition, match=(
            rf"conflict: unable to delete {A.digest[7:19]} \(must be forced\) - image is being"
            " used by stopped container c0ffeec0ffee")):
        store.remove(A.digest, in_use=lambda d: stopped)
    running = ContainerUse("beef" * 16, running=True)
    with pytest.raises(FailedPrecondition, match=r"\(cannot be forced\) - image is being used"
                                                 " by running container beefbeefbeef"):
        store.remove(A.digest, force=True, in_use=lambda d: running)
    assert names(store) == [BUSYBOX]
    # By name, forced, while a container uses it: untagged, kept as dangling for the container.
    out = store.remove("busybox", force=True, in_use=lambda d: running)
    assert out == [DeleteItem(untagged="busybox:latest")]
    assert names(store) == [dangling_name(A.digest)]
    # The dangling image goes once nothing uses it.
    assert store.remove(A.digest[7:19]) == [DeleteItem(deleted=A.digest)]
    with pytest.raises(NotFound):
        store.remove(A.digest)


def test_list_filters(store: ImageStore) -> None:
    store.put("busybox", A, {"tier": "base"})
    store.put("me/app:v1", B, {"tier": "app"})
    store.put("localhost:5000/me/app:v2", C)
    store.put(None, desc("d"))
    assert len(store.list()) == 4
    assert [i.name for i in store.list({"reference": ["busybox"]})] == [BUSYBOX]
    assert [i.name for i in store.list({"reference": ["me/*"]})] == ["docker.io/me/app:v1"]
    assert [i.name for i in store.list({"reference": ["*:v?"]})] == []  # * stops at "/"
    assert [i.name for i in store.list({"reference": ["*/*/*:v?"]})] == [
        "localhost:5000/me/app:v2"]
    assert len(store.list({"dangling": ["false"]})) == 3
    assert [i.labels for i in store.list({"label": ["tier=app"]})] == [{"tier": "app"}]
    assert len(store.list({"label": ["tier"]})) == 2
    assert store.list({"label": ["tier"]}, config_labels=lambda i: {}) == []
    assert [i.name for i in store.list({"before": ["me/app:v1"]})] == [BUSYBOX]
    assert len(store.list({"since": ["me/app:v1"]})) == 2
    with pytest.raises(InvalidArgument):
        store.list({"bogus": ["1"]})
    with pytest.raises(InvalidArgument):
        store.list({"dangling": ["maybe"]})
    with pytest.raises(NotFound):
        store.list({"before": ["nothing"]})


def test_concurrent_tagging(store: ImageStore) -> None:
    store.put("busybox", A)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.tag("busybox", f"t{n}:{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.all()) == 81


def test_crash_in_a_transaction_leaves_the_old_state(tmp_path: Path) -> None:
    """A process killed in the middle of a multi-record change (here: exiting without commit
    or rollback) leaves the records as they were, for the next process."""
    s = ImageStore(tmp_path)
    s.put("busybox", A)
    s.close()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        child = ImageStore(tmp_path)
        with child._tx():
            child.tag("busybox", "moved")
            child.delete(BUSYBOX)
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    s = ImageStore(tmp_path)
    assert names(s) == [BUSYBOX]
    s.close()
