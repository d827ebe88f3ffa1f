"""Unpacking an image's layers into committed snapshots named by chainID.

What it is for: after a pull (or a load), ``unpack_layers`` turns the manifest's layer blobs into
a stack of COMMITTED snapshots, one per layer, each named by its chainID (OCI image spec,
"ChainID": ``ChainID(L0) = DiffID(L0)``, ``ChainID(Ln) = sha256(ChainID(Ln-1) + " " +
DiffID(Ln))``). A layer whose chainID is already committed is not applied again (Docker's
"Already exists"); images sharing a base share its snapshots.

Per missing layer: Prepare an ACTIVE snapshot under a unique key (``extract-<random>-<chainID>``)
on the previous chainID, apply the blob (``archive.apply``), check that the diff_id of what was
applied is the config's, Commit it as the chainID. If anything fails the active snapshot is
removed and the error raised: nothing half-applied is ever committed. (If that removal fails
too, it is logged and the unpack's own error is still the one raised.)

Two unpacks of the same image at once (two pulls, or a pull and a load) are safe: each extracts
under its own key, the first Commit wins, the second finds ``AlreadyExists``, removes its own
copy and goes on with the winner's snapshot (as containerd's unpacker does).

What it must never do: commit a layer whose diff_id was not verified, or name a snapshot by
anything but the chainID of the verified diff_ids below it.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydeskd.containerd.archive.apply import apply_layer
from pydeskd.containerd.content import Provider
from pydeskd.containerd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pydeskd.containerd.oci import Descriptor, ImageConfig, Manifest
from pydeskd.containerd.progress import Event, Reporter, Status
from pydeskd.containerd.snapshots import Kind, Snapshotter

log = logging.getLogger(__name__)

# Progress events at most this often per layer (a reporter is called inline).
_PROGRESS_INTERVAL = 0.1
# containerd's label on an unpacked snapshot: the uncompressed digest it was made from.
LABEL_DIFF_ID = "containerd.io/snapshot/diff-id"


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chainID of every prefix of ``diff_ids`` (same length, bottom first)."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            text = f"{out[-1]} {diff_id}".encode()
            out.append("sha256:" + hashlib.sha256(text).hexdigest())
    return out


def chain_id(diff_ids: Sequence[str]) -> str:
    """The chainID of the whole stack. Raises InvalidArgument for an empty one."""
    if not diff_ids:
        raise InvalidArgument("an image without layers has no chainID")
    return chain_ids(diff_ids)[-1]


def _committed(snapshotter: Snapshotter, name: str) -> bool:
    try:
        return snapshotter.stat(name).kind is Kind.COMMITTED
    except NotFound:
        return False


def unpack_layers(manifest: Manifest, config: ImageConfig, provider: Provider,
                  snapshotter: Snapshotter, reporter: Reporter, *,
                  labels: Mapping[str, str] | None = None, sync: bool = True) -> str:
    """Unpack every layer of ``manifest`` (blobs from ``provider``); return the top chainID.

    ``labels`` go on every committed snapshot (the image store may mark them for the garbage
    collector). ``sync``: flush each layer's files to disk before its commit (``syncfs``), so a
    power loss never leaves a committed snapshot with missing contents; tests may turn it off.
    Raises InvalidArgument (layers and diff_ids disagree, a hostile or malformed
    layer), FailedPrecondition (a diff_id mismatch), NotFound (a blob missing), OSError.
    """
    if len(manifest.layers) != len(config.diff_ids):
        raise InvalidArgument(f"manifest has {len(manifest.layers)} layers but the config"
                              f" lists {len(config.diff_ids)} diff_ids")
    if not manifest.layers:
        raise InvalidArgument("image has no layers")
    unpacker = _Unpacker(provider, snapshotter, reporter, labels or {}, sync)
    chains = chain_ids(config.diff_ids)
    parent = ""
    for layer, diff_id, chain in zip(manifest.layers, config.diff_ids, chains, strict=True):
        if _committed(snapshotter, chain):
            reporter(Event(layer.digest, Status.ALREADY_EXISTS))
        else:
            unpacker.unpack(layer, diff_id, chain, parent)
        parent = chain
    return chains[-1]


@dataclass(frozen=True)
class _Unpacker:
    provider: Provider
    snapshotter: Snapshotter
    reporter: Reporter
    labels: Mapping[str, str]
    sync: bool

    def unpack(self, layer: Descriptor, diff_id: str, chain: str, parent: str) -> None:
        digest, size, reporter = layer.digest, layer.size, self.reporter
        key = f"extract-{uuid.uuid4().hex[:12]}-{chain}"
        mounts = self.snapshotter.prepare(key, parent, {"containerd.io/snapshot.ref": chain})
        last = 0.0

        def on_read(done: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= _PROGRESS_INTERVAL:
                last = now
                reporter(Event(digest, Status.EXTRACTING, done, size))

        try:
            reporter(Event(digest, Status.EXTRACTING, 0, size))
            with self.provider.reader_at(digest) as reader:
                result = apply_layer(reader, mounts, on_read, self.sync)
            if result.diff_id != diff_id:
                raise FailedPrecondition(
                    f"layer {digest}: unpacked content has diff_id {result.diff_id}, but the"
                    f" image config says {diff_id}")
            reporter(Event(digest, Status.EXTRACTING, size, size))
            try:
                self.snapshotter.commit(chain, key, {**self.labels, LABEL_DIFF_ID: diff_id})
            except AlreadyExists:
                # Another unpack of the same layer committed first: use its snapshot, drop ours.
                self._drop(key)
        except BaseException:
            self._drop(key)
            raise
        reporter(Event(digest, Status.PULL_COMPLETE))

    def _drop(self, key: str) -> None:
        """Remove the extract snapshot ``key``; a failure is logged, never raised.

        It runs while the unpack's own error (a diff_id mismatch, a hostile layer) is being
        raised, and that error is the one the caller must see; an extract snapshot left behind
        is collected later (the service removes abandoned ``extract-*`` snapshots).
        """
        try:
            self.snapshotter.remove(key)
        except NotFound:
            pass
        except Exception:
            log.exception("unpack: could not remove snapshot %s", key)
