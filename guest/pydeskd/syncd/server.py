"""The guest end of one sync session: applies the host's changes, reports the guest's own.

What it is for: ``python3 -m pydeskd.syncd ROOT`` speaks the framed protocol (``wire``) on
stdin/stdout, one host root per process; the host drives (it holds the agreed state and decides
conflicts). Messages from the host: ``hello`` (version, ignore rules, in-place mode), ``scan``
(reply: ``manifest`` pieces, and the inotify watch starts), ``put`` (apply changes, each only if
the path is still what the host expected; else ``reject`` with what is there), ``get`` (reply:
``put`` with the content, tagged), ``barrier`` (echoed once everything before it is applied;
with ``durable``, only once it is also on disk and the copy's identity records the host's
generation ``gen``: the host saves its agreed state on that answer), ``bye``. The ``hello``
answer carries the copy's identity (``id``, ``gen``: see ``identity``).
From the guest, unasked: ``changes`` — paths a container changed, with what they are now, batched
every ~10 ms, and ``mv`` (new path -> old path) for the renames inotify paired by cookie; the
guest's own applies are not reported back (echo suppression by entry).
What it must never do: decide conflicts, write outside ROOT, follow symlinks, or exit while the
host keeps the stream open (a transfer in progress is dropped only with the session).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from pydeskd.syncd import fstree, wire
from pydeskd.syncd.fstree import Entry
from pydeskd.syncd.identity import CopyIdentity, syncfs
from pydeskd.syncd.ignore import Matcher
from pydeskd.syncd.inotify import Inotify

DEBOUNCE_S = 0.008
MAX_DELAY_S = 0.05
READ_CHUNK = 1 << 20
MANIFEST_PIECE = 5000


class Server:
    def __init__(self, root: str, infd: int = 0, outfd: int = 1,
                 flush_disk: Callable[[str], None] = syncfs) -> None:
        self.root = root
        self.identity = CopyIdentity(root, flush_disk)
        self._send_lock = threading.Lock()  # the loop and the durable-barrier thread both send
        self._durable: threading.Thread | None = None  # the last durable barrier's commit
        self.infd, self.outfd = infd, outfd
        self.rules = Matcher()
        self.applier = fstree.Applier(root, umask_zero=True)
        self.inotify: Inotify | None = None
        self.applied: dict[str, Entry | None] = {}  # our own writes, not to report back
        self.pending: dict[str, None] = {}  # changed paths, in order
        self.first_event = 0.0
        self.last_event = 0.0
        self.running = True

    # -- output -------------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        view = memoryview(frame)
        with self._send_lock:
            while view:
                view = view[os.write(self.outfd, view):]

    def msg(self, header: dict[str, Any], data: bytes = b"") -> None:
        self.send(wire.encode(header, data))

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        os.makedirs(self.root, mode=0o755, exist_ok=True)  # parents under the usual umask
        # Modes come from the host exactly (the applier relies on it: no fchmod per file).
        os.umask(0)
        reader = wire.FrameReader()
        # select.poll rather than selectors: one import less at every session start.
        poller = select.poll()
        poller.register(self.infd, select.POLLIN)
        watching = False
        try:
            while self.running:
                timeout = self._flush_timeout()
                ready = poller.poll(None if timeout is None else timeout * 1000)
                for fd, _ in ready:
                    if fd == self.infd:
                        chunk = os.read(self.infd, READ_CHUNK)
                        if not chunk:
                            self.running = False
                            break
                        for header, data in reader.feed(chunk):
                            self.handle(header, data)
                        if self.inotify is not None and not watching:
                            poller.register(self.inotify.fd, select.POLLIN)
                            watching = True
                    else:
                        self._on_inotify()
                if self.pending and self._flush_timeout() == 0:
                    self.flush_changes()
        finally:
            self.settle()
            self.applier.abort_all()
            if self.inotify is not None:
                self.inotify.close()
        return 0

    def _flush_timeout(self) -> float | None:
        if not self.pending:
            return None
        now = time.monotonic()
        due = min(self.last_event + DEBOUNCE_S, self.first_event + MAX_DELAY_S)
        return max(0.0, due - now)

    def handle(self, header: dict[str, Any], data: bytes) -> None:
        kind = header["t"]
        if kind == "hello":
            self.rules = Matcher(header.get("ignore"))
            self.applier.inplace = bool(header.get("inplace", False))
            self.identity.load()
            self.msg({"t": "hello", "v": wire.PROTOCOL_VERSION, "root": self.root,
                      "id": self.identity.copy_id, "gen": self.identity.gen})
            if int(header.get("v", 0)) != wire.PROTOCOL_VERSION:
                self.msg({"t": "error", "message": f"protocol {header.get('v')} not supported"})
                self.running = False
        elif kind == "scan":
            self.scan()
        elif kind == "put":
            self.applier.new_message()
            for op, chunk in wire.split_put(header, data):
                self.apply(op, chunk)
        elif kind == "get":
            self.reply_get([str(p) for p in header["paths"]], str(header.get("tag", "")))
        elif kind == "barrier":
            self.flush_changes()
            self.barrier(header)
        elif kind == "bye":
            self.running = False
        else:
            self.msg({"t": "error", "message": f"unknown message {kind!r}"})

    def barrier(self, header: dict[str, Any]) -> None:
        answer: dict[str, Any] = {"t": "barrier", "id": header.get("id")}
        if not header.get("durable"):
            self.msg(answer)
            return
        # The disk flush can take long (a first sync's megabytes through QEMU's flush): it runs
        # beside the loop, so applies and plain barriers (a container start waiting) go on.
        # Everything applied before the barrier was written before syncfs starts, which is
        # all the answer claims. Commits run one after the other, in order.
        worker = threading.Thread(target=self._commit,
                                  args=(self._durable, int(header.get("gen", 0)), answer),
                                  name="durable-barrier")
        self._durable = worker
        worker.start()

    def _commit(self, before: threading.Thread | None, gen: int, answer: dict[str, Any]) -> None:
        if before is not None:
            before.join()
        try:
            try:
                self.identity.commit(gen)
                answer["durable"] = True
            except OSError as e:  # the host then keeps its older agreed state: safe
                self.msg({"t": "error", "message": f"cannot make the copy durable: {e}"})
            answer["gen"] = self.identity.gen
            self.msg(answer)
        except OSError:
            pass  # the host closed the stream: nobody waits for this answer

    def settle(self) -> None:
        """Waits for the durable barriers under way (before exiting, and in tests)."""
        if self._durable is not None:
            self._durable.join()

    def skip(self, rel: str, is_dir: bool) -> bool:
        return self.rules.ignored(rel, is_dir)

    def scan(self) -> None:
        if self.inotify is None:
            # Watch first, then scan: a change during the scan is reported, not lost.
            self.inotify = Inotify(self.root, self.skip)
            self.inotify.watch_tree()
        entries = fstree.scan(self.root, self.skip)
        items = [e.wire() for e in entries.values()]
        for start in range(0, max(len(items), 1), MANIFEST_PIECE):
            piece = items[start:start + MANIFEST_PIECE]
            self.msg({"t": "manifest", "entries": piece,
                      "more": start + MANIFEST_PIECE < len(items)})

    def apply(self, op: dict[str, Any], chunk: bytes) -> None:
        o = op["o"]
        expect = Entry.from_wire(op["x"]) if op.get("x") else None
        try:
            rejected: fstree.Rejected | None
            if o == "f":
                entry = Entry.from_wire(op["e"])
                rejected = self.applier.file_chunk(entry, expect, int(op.get("off", 0)), chunk,
                                                   bool(op.get("fin", True)),
                                                   direct=bool(op.get("new")))
                if rejected is None and op.get("fin", True):
                    self.applied[entry.path] = entry
            elif o in ("d", "l"):
                entry = Entry.from_wire(op["e"])
                rejected = (self.applier.mkdir(entry, expect) if o == "d"
                            else self.applier.symlink(entry, expect))
                if rejected is None:
                    self.applied[entry.path] = entry
            elif o == "rm":
                rejected = self.applier.remove(str(op["p"]), expect)
                if rejected is None:
                    self.applied[str(op["p"])] = None
            elif o == "ab":
                self.applier.abort(str(op["p"]))
                rejected = None
            elif o == "mv":
                rejected = self.applier.rename(str(op["p"]), str(op["to"]), expect)
                if rejected is None:
                    self.applied[str(op["p"])] = None
                    self.applied[str(op["to"])] = fstree.lstat_entry(self.root, str(op["to"]))
            else:
                raise fstree.UnsafePath(f"unknown op {o!r}")
        except (OSError, fstree.UnsafePath, ValueError) as e:
            path = str(op.get("p") or (op.get("e") or ["?"])[0])
            self.msg({"t": "error", "path": path, "message": f"{type(e).__name__}: {e}"})
            return
        if rejected is not None:
            current = rejected.current.wire() if rejected.current else None
            self.msg({"t": "reject", "p": rejected.path, "cur": current})
        if len(self.applied) > 200_000:  # entries whose echo never came (no-op applies)
            self.applied.clear()

    def reply_get(self, paths: list[str], tag: str) -> None:
        batch = wire.PutBatch({"tag": tag})
        for rel in paths:
            try:
                entry = fstree.lstat_entry(self.root, fstree.check_rel(rel))
                if entry is None:
                    frames = batch.add({"o": "rm", "p": rel})
                elif entry.kind != fstree.FILE:
                    frames = batch.add({"o": entry.kind, "e": entry.wire()})
                else:
                    frames = []
                    for offset, data in fstree.read_chunks(self.root, entry, READ_CHUNK):
                        final = len(data) < READ_CHUNK
                        frames += batch.add({"o": "f", "e": entry.wire(), "off": offset,
                                             "fin": final}, data)
            except (OSError, fstree.UnsafePath) as e:
                frames = batch.add({"o": "rm", "p": rel, "err": str(e)})
            for frame in frames:
                self.send(frame)
        for frame in batch.flush():
            self.send(frame)

    # -- the guest's own changes --------------------------------------------------------------
    def _on_inotify(self) -> None:
        assert self.inotify is not None
        paths = self.inotify.read()
        if self.inotify.overflowed:
            self.inotify.overflowed = False
            paths += list(fstree.scan(self.root, self.skip))
        if not paths:
            return
        now = time.monotonic()
        if not self.pending:
            self.first_event = now
        self.last_event = now
        for p in paths:
            self.pending[p] = None

    def flush_changes(self) -> None:
        # The events already queued are read first: a path's state read now must travel with
        # the events that made it so (else a file renamed since its last event is reported
        # gone, and the new name's event, with the move's cookie, comes in the next batch).
        # Events keep coming while the batch is read: a few rounds, the rest waits its turn.
        found: dict[str, Entry | None] = {}
        for _ in range(3):
            if self.inotify is not None:
                self._on_inotify()
            if not self.pending:
                break
            batch, self.pending = self.pending, {}
            for rel in batch:
                found[rel] = fstree.lstat_entry(self.root, rel)
        out: list[list[Any]] = []
        for rel, entry in found.items():
            if rel in self.applied:
                mine = self.applied.pop(rel)
                if fstree.same(mine, entry):
                    continue
            out.append([rel, entry.wire() if entry else None])
        moves = self.inotify.take_moves() if self.inotify is not None else {}
        if out:
            header: dict[str, Any] = {"t": "changes", "c": out}
            # Renames seen by inotify (cookies) with both halves in this batch: the host then
            # renames instead of fetching the content again.
            reported = {rel for rel, _ in out}
            seen = {new: old for new, old in moves.items() if new in reported and old in reported}
            if seen:
                header["mv"] = seen
            self.msg(header)
