"""Decompression bombs: a small archive that inflates to 1 GiB loads, imports or is refused with
bounded memory.

Each case runs in a child process whose address space is capped (``RLIMIT_AS``) and which
reports its peak RSS: holding a bomb's output whole fails with MemoryError under the cap, and
peak RSS shows that nothing near the inflated size was ever resident.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

ROOT = Path(__file__).resolve().parents[3]
GIB = 1 << 30
_MIB = bytes(1 << 20)
ADDRESS_SPACE = 1 * GIB  # far below any bomb output held whole, and its copies
PEAK_RSS = 128 << 20  # the child with every module imported is ~40 MiB; pieces are 1 MiB

pytestmark = pytest.mark.timeout(600)


def zeros_compressed(compressor: Callable[[bytes], bytes], flush: Callable[[], bytes],
                     size: int) -> bytes:
    """``size`` zero bytes compressed, without holding them."""
    out = [compressor(_MIB) for _ in range(size // len(_MIB))]
    out.append(flush())
    return b"".join(out)


def zstd_zeros(size: int) -> bytes:
    c = zstandard.ZstdCompressor().compressobj()
    return zeros_compressed(c.compress, c.flush, size)


def gzip_zeros(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return zeros_compressed(c.compress, c.flush, size)


def zeros_digest(size: int) -> str:
    h = hashlib.sha256()
    for _ in range(size // len(_MIB)):
        h.update(_MIB)
    return "sha256:" + h.hexdigest()


def add(tar: tarfile.TarFile, name: str, data: bytes | None = None, *, size: int = 0,
        body: io.RawIOBase | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else size
    info.mtime = 1
    tar.addfile(info, io.BytesIO(data) if data is not None else body)


class Zeros(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        buffer[:] = bytes(len(buffer))
        return len(buffer)


def docker_save_tar(out: io.BufferedWriter | io.BytesIO, diff_id: str, tag: str,
                    layer: bytes | None = None, layer_size: int = 0) -> None:
    """A ``docker save`` (manifest.json) archive of one image with one layer: ``layer``, or
    ``layer_size`` zero bytes streamed."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag],
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "config.json", config)
        if layer is not None:
            add(tar, "layer/layer.tar", layer)
        else:
            add(tar, "layer/layer.tar", size=layer_size, body=Zeros())
        add(tar, "manifest.json", manifest)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("bombs")
    gib_digest = zeros_digest(GIB)
    files: dict[str, bytes] = {"zstd": zstd_zeros(GIB), "gzip": gzip_zeros(GIB)}
    for kind in ("zstd", "gzip"):
        for good in (True, False):
            buf = io.BytesIO()
            docker_save_tar(buf, gib_digest if good else "sha256:" + "0" * 64,
                            f"bomb:{kind}", files[kind])
            files[f"load-{kind}-{'good' if good else 'bad'}"] = buf.getvalue()
    # A plain 512 MiB layer in a bzip2-compressed archive: the whole archive is a few KiB.
    with open(root / "plain.tar", "wb") as f:
        docker_save_tar(f, zeros_digest(512 << 20), "bomb:bzip2", layer_size=512 << 20)  # type: ignore[arg-type]
    compressor = bz2.BZ2Compressor(9)
    with open(root / "plain.tar", "rb") as f:
        pieces = [compressor.compress(chunk) for chunk in iter(lambda: f.read(1 << 20), b"")]
    files["load-bzip2-archive"] = b"".join(pieces) + compressor.flush()
    (root / "plain.tar").unlink()
    paths = {}
    for name, data in files.items():
        assert len(data) < 2 << 20, name  # small in, 0.5 to 1 GiB out
        paths[name] = root / name
        paths[name].write_bytes(data)
    paths["digest"] = root / "digest"
    paths["digest"].write_text(gib_digest)
    yield paths


# --- the child -------------------------------------------------------------------------------


def child_main(action: str, data: str, store: str) -> None:
    """Runs in the capped child: load or import ``data`` into a fresh store at ``store``, print
    what happened and the peak RSS as one JSON line."""
    import resource

    from pydeskd.containerd.errors import InvalidArgument
    from pydeskd.containerd.imageio import docker_archive
    from pydeskd.containerd.imageio.rootfs_import import import_rootfs
    from pydeskd.containerd.images import image_manifests
    from tests.integration.imageio.helpers import stores

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    result: dict[str, object] = {}
    with stores(Path(store)) as s, open(data, "rb") as stream:
        try:
            if action == "load":
                loaded = docker_archive.load(stream, s.content, s.ctx)
                result["loaded"] = [image.name for image in loaded]
            else:
                import_rootfs(stream, s.content, s.ctx, name="imported:bomb")
                target = s.images.resolve("imported:bomb").target
                result["diff_ids"] = list(image_manifests(s.content, target)[2].diff_ids)
        except InvalidArgument as e:
            result["refused"] = str(e)
        result["ingests"] = s.ingests()
    # VmHWM: the high-water mark of this process's own memory since its exec. (ru_maxrss is no
    # good here: Linux carries the parent's RSS at fork into it, so a big pytest parent would
    # count as the child's peak.)
    with open("/proc/self/status") as status:
        hwm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    result["peak_rss"] = hwm_kib * 1024
    print(json.dumps(result))


def run_child(action: str, data: Path, store: Path) -> dict[str, object]:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from tests.integration.imageio.test_bombs import child_main; "
            "child_main(*sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, action, str(data), str(store)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result["peak_rss"], int)
    assert result["peak_rss"] < PEAK_RSS, f"peak RSS {result['peak_rss'] >> 20} MiB"
    assert result["ingests"] == []
    return result


@pytest.mark.parametrize("kind", ["zstd", "gzip"])
def test_load_layer_bomb_with_its_diff_id(tmp_path: Path, bombs: dict[str, Path],
                                          kind: str) -> None:
    """A 1 GiB layer (of a few KiB or 1 MiB compressed) is hashed piece by piece and loads."""
    result = run_child("load", bombs[f"load-{kind}-good"], tmp_path / "store")
    assert result == {**result, "loaded": [f"docker.io/library/bomb:{kind}"]}


@pytest.mark.parametrize("kind", ["zstd", "gzip"])
def test_load_layer_bomb_with_a_wrong_diff_id(tmp_path: Path, bombs: dict[str, Path],
                                              kind: str) -> None:
    result = run_child("load", bombs[f"load-{kind}-bad"], tmp_path / "store")
    assert "invalid diffID for layer 0" in str(result.get("refused"))


def test_load_bzip2_archive_bomb(tmp_path: Path, bombs: dict[str, Path]) -> None:
    """The archive itself compressed: 10 KiB of bzip2 is gigabytes, inflated only as read."""
    result = run_child("load", bombs["load-bzip2-archive"], tmp_path / "store")
    assert result == {**result, "loaded": ["docker.io/library/bomb:bzip2"]}


@pytest.mark.parametrize("kind", ["zstd", "gzip"])
def test_import_bomb(tmp_path: Path, bombs: dict[str, Path], kind: str) -> None:
    """``docker import`` of 1 GiB of zeros (an empty tar, padded) streams through."""
    result = run_child("import", bombs[kind], tmp_path / "store")
    assert result == {**result, "diff_ids": [bombs["digest"].read_text()]}
