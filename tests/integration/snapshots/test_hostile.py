"""Hostile layer tars (root, real overlay): every case is confined or rejected, and nothing
outside the snapshotter root changes.

Each case builds a tar with ``tarfile`` and unpacks it twice: as the first layer of an image
(plain mode, a bind snapshot) and on top of a base layer (overlay mode, written into an
upperdir with the base as lowerdir). A sentinel tree next to the snapshotter root (files,
a directory, a symlink, a device-free copy of "/etc/passwd") is recorded before and compared
after. Rejected cases must also leave no snapshot behind; confined cases say where the entry
landed.

The rule per case is ``archive.confine``'s: ``..`` rejected; absolute names relative to the
snapshot; symlinked parents resolved inside the snapshot (or rejected when dangling there);
hardlink targets resolved the same way and never followed; whiteouts of ``..`` rejected.
"CVE-2026-17106" could not be found in any advisory source available here; these cases cover
the symlink and hardlink escape classes generally (CVE-2021-32760 chmod-through-symlink,
CVE-2025-47290's TOCTOU class via openat2, tar hardlink/symlink escapes).
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pydeskd.containerd.errors import InvalidArgument
from pydeskd.containerd.snapshots import mount
from tests.integration.snapshots.conftest import Env
from tests.unit.containerd.archive.layers import (
    Entry,
    directory,
    file,
    hardlink,
    layer,
    symlink,
    tree,
)

BASE = layer(directory("etc"), file("etc/passwd", b"root:x:0:0"), directory("data"),
             file("data/f", b"base"))


@dataclass(frozen=True)
class Case:
    name: str
    entries: Callable[[Path], list[Entry]]  # given the outside directory's absolute path
    rejected: bool | None  # None: either, depending on the mode; confinement is what counts
    # For confined cases: a check of the mounted result (root of the merged view, outside).
    check: Callable[[Path, Path], None] | None = None


def rel(outside: Path) -> str:
    return str(outside).lstrip("/")


def _exists(path: str) -> Callable[[Path, Path], None]:
    def check(root: Path, outside: Path) -> None:
        assert os.path.lexists(root / path.replace("OUT", rel(outside)))
    return check


CASES = [
    Case("dotdot-file", lambda o: [file("../../../../../../../../" + rel(o) + "/evil", b"x")],
         True),
    Case("dotdot-inside-path", lambda o: [file("data/../../evil", b"x")], True),
    Case("absolute-file", lambda o: [file(f"{o}/secret", b"pwned")], False,
         _exists("OUT/secret")),
    Case("absolute-symlink-then-write", lambda o: [
        symlink("etc2", str(o)), file("etc2/secret", b"pwned")], True),
    Case("absolute-symlink-to-root-then-write", lambda o: [
        symlink("up", "/"), file(f"up/{rel(o)}/secret", b"pwned")], False,
        _exists("OUT/secret")),
    Case("relative-symlink-then-write", lambda o: [
        symlink("up", "../../../../../../../../../../"), directory(f"up/{rel(o)}"),
        file(f"up/{rel(o)}/secret", b"pwned")], False, _exists("OUT/secret")),
    Case("symlink-chain-then-write", lambda o: [
        symlink("a", "b"), symlink("b", "../../.."), directory("a/etc"),
        file("a/etc/passwd", b"pwned")], False,
        lambda root, o: (root / "etc/passwd").read_bytes() == b"pwned"),
    Case("symlink-then-replace-as-file", lambda o: [
        symlink("s", f"{o}/secret"), file("s", b"pwned", 0o777)], False,
        lambda root, o: not (root / "s").is_symlink()),
    Case("symlink-then-chmod-dir-entry", lambda o: [
        symlink("d", f"{o}/dir"), directory("d", 0o777)], False,
        lambda root, o: (root / "d").is_dir()),
    Case("hardlink-absolute-outside", lambda o: [hardlink("h", f"{o}/secret")], True),
    Case("hardlink-dotdot", lambda o: [hardlink("h", f"../../../../../../{rel(o)}/secret")],
         True),
    Case("hardlink-through-symlinked-parent", lambda o: [
        symlink("p", str(o)), hardlink("h", "p/secret")], True),
    Case("hardlink-to-symlink-to-outside", lambda o: [
        symlink("s", f"{o}/secret"), hardlink("h", "s"), file("h", b"pwned")], False,
        lambda root, o: (root / "h").read_bytes() == b"pwned"),
    Case("whiteout-dotdot", lambda o: [file("data/.wh..."), file("x")], True),
    Case("whiteout-absolute", lambda o: [file(f"{o}/.wh.secret")], False),
    # Plain mode: nothing to delete inside the root (a no-op); overlay: a dangling parent.
    Case("whiteout-through-symlink", lambda o: [symlink("w", str(o)), file("w/.wh.secret")],
         None),
    Case("device-node-confined", lambda o: [
        Entry(f"{o}/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)], False,
        _exists("OUT/null")),
    Case("device-node-dotdot", lambda o: [
        Entry("../../../../../../null", tarfile.CHRTYPE, devmajor=1, devminor=3)], True),
    Case("long-pax-name", lambda o: [file("a" * 5000, b"x")], True),
    Case("long-component", lambda o: [file("d/" + "n" * 300, b"x")], True),
    Case("nul-free-pax-path-with-dotdot", lambda o: [
        file("ok", b"x", pax={"path": f"../../../{rel(o)}/paxevil"})], True),
]


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "outside"
    (path / "dir").mkdir(parents=True)
    (path / "secret").write_bytes(b"secret")
    os.chmod(path / "secret", 0o600)
    os.symlink("secret", path / "link")
    (path / "passwd").write_bytes(b"root:x:0:0")
    yield path


def sentinel(tmp: Path) -> dict[str, object]:
    """Everything under the test's tmp dir except the snapshotter's and content store's roots."""
    out: dict[str, object] = {}
    for child in sorted(tmp.iterdir()):
        if child.name not in ("snapshots", "content"):
            out.update({f"{child.name}{k}": v for k, v in tree(child).items()})
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("mode", ["plain", "overlay"])
def test_hostile_layer(env: Env, outside: Path, case: Case, mode: str) -> None:
    before = sentinel(env.tmp)
    etc_before = os.stat("/etc/passwd")
    tars = ([BASE] if mode == "overlay" else []) + [layer(*case.entries(outside))]
    if case.rejected is None:
        with contextlib.suppress(InvalidArgument):
            env.unpack(tars)
    elif case.rejected:
        with pytest.raises(InvalidArgument):
            env.unpack(tars)
        names: list[str] = []
        env.sn.walk(lambda i: names.append(i.name))
        assert len(names) == len(tars) - 1  # only the base, if any: nothing half-applied
    else:
        top = env.unpack(tars)
        if case.check is not None:
            with mount.mounted(env.sn.view("check", top)) as root:
                result = case.check(root, outside)
                assert result is None or result
            env.sn.remove("check")
    assert sentinel(env.tmp) == before
    after = os.stat("/etc/passwd")
    assert (after.st_mtime_ns, after.st_mode, after.st_size) == \
        (etc_before.st_mtime_ns, etc_before.st_mode, etc_before.st_size)


def test_opaque_xattr_from_a_tar_is_dropped(env: Env) -> None:
    top = env.unpack([BASE, layer(directory("data", pax={
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.trusted.overlay.redirect": "/etc"}))])
    with mount.mounted(env.sn.view("check", top)) as root:
        assert (root / "data/f").read_bytes() == b"base"  # not hidden by a forged opaque
    env.sn.remove("check")
