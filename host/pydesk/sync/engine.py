"""The host's half of a sync session, without threads: state, decisions, and the messages sent.

What it is for: :class:`Engine` holds the *agreed* manifest (what both sides had when they last
agreed), turns host changes into ``put`` messages (each carrying the guest entry it expects, so
the guest refuses a change that would overwrite a container's write), turns guest changes into
``get`` requests and local applies, and resolves conflicts by the rule of ``plan`` (newer mtime
wins, the other version is kept beside it as ``NAME.pydesk-conflict-<side>-<UTC time>`` on both
sides). Echoes — the events our own applies cause on either side — are dropped because the path
then equals its agreed entry. ``Session`` feeds it events and messages from one thread.
The guest is not trusted: every path it names is checked (``fstree.check_rel``) and resolved
with no symlink followed; a path that cannot be applied here (under a symlink, an I/O error) is
skipped and reported (``Stats.skipped``, ``last_error``) and the session goes on.
What it must never do: block on the network (it only calls ``send``), follow a symlink, fail
the session for one path, take two files that merely look alike for a rename, or overwrite a
version that nobody agreed on without keeping it as a conflict copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydesk.sync.ignore import IgnoreRules
from pydesk.sync.plan import Plan, match_renames, under
from pydesk.sync.resolve import resolve_conflict
from pydesk.sync.watcher import MoveLog, move_log
from pydeskd.syncd import fstree, wire
from pydeskd.syncd.fstree import DIR, FILE, LINK, Entry, UnsafePath, lstat_entry, same

log = logging.getLogger(__name__)

NEVER = Entry("", LINK, target="\0")
"""An expectation no path can meet: makes the applier keep received content for a resolution."""
READ_CHUNK = 1 << 20


@dataclass
class Stats:
    pushed: int = 0
    pulled: int = 0
    deleted_guest: int = 0
    deleted_host: int = 0
    conflicts: int = 0
    renamed: int = 0
    guest_errors: int = 0
    skipped: int = 0
    """Paths not applied here: unsafe, under a symlink or a file, or an I/O error."""
    last_error: str = ""


PATH_ERRORS = (UnsafePath, OSError, ValueError)
"""What one path's apply may raise without ending the session (OSError from the transport
arrives as SessionFailed, not caught here)."""


class Engine:
    def __init__(self, root: str, rules: IgnoreRules, send: Callable[[bytes], None],
                 agreed: dict[str, Entry] | None = None, moves: MoveLog | None = None) -> None:
        self.root = root
        self.moves = move_log(root) if moves is None else moves
        """The host renames the watcher saw: the only ones sent as ``mv``."""
        self.rules = rules
        self.send = send
        self.agreed: dict[str, Entry] = dict(agreed or {})
        self.applier = fstree.Applier(root, keep_rejected=True)
        self.conflicted: set[str] = set()
        self.pending_gets: Counter[str] = Counter()
        self.stats = Stats()
        self.dirty = False
        self._batch = wire.PutBatch()
        self._moves: dict[str, Entry] = {}  # old path -> new entry of renames sent

    # -- helpers ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _each(self, path: str) -> Iterator[None]:
        """One path's work: an error there skips that path (reported), not the session."""
        try:
            yield
        except PATH_ERRORS as e:
            self.skip(path, e)

    def skip(self, path: str, error: Exception) -> None:
        """``path`` could not be applied here: left unagreed (the next change of either side,
        or the next session, tries again) and reported in the status."""
        self.conflicted.discard(path)
        self.stats.skipped += 1
        self.stats.last_error = f"skipped {path!r}: {type(error).__name__}: {error}"
        log.warning("sync of %s: %s", self.root, self.stats.last_error)

    def safe(self, path: str) -> bool:
        """False (and reported) for a guest path that is not a plain relative one."""
        try:
            fstree.check_rel(path)
        except UnsafePath as e:
            self.skip(path, e)
            return False
        return True

    def ignored(self, rel: str, entry: Entry | None) -> bool:
        if entry is not None:
            return self.rules.ignored(rel, entry.kind == DIR)
        return self.rules.ignored(rel, False) and self.rules.ignored(rel, True)

    def agree(self, path: str, entry: Entry | None) -> None:
        self.dirty = True
        if entry is None:
            self.agreed.pop(path, None)
        else:
            self.agreed[path] = entry

    def put_op(self, op: dict[str, Any], data: bytes = b"") -> None:
        for frame in self._batch.add(op, data):
            self.send(frame)

    def flush(self) -> None:
        """Sends the ``put`` being packed; call after each batch of decisions."""
        for frame in self._batch.flush():
            self.send(frame)

    def request(self, paths: list[str], tag: str) -> None:
        if not paths:
            return
        self.flush()
        for p in paths:
            self.pending_gets[p] += 1
        self.send(wire.encode({"t": "get", "paths": paths, "tag": tag}))

    # -- host -> guest ------------------------------------------------------------------------
    def push(self, entry: Entry, expect: Entry | None, *, new: bool = False) -> None:
        """Sends the host's ``entry`` (content read now); the guest applies it if it still has
        ``expect``. A file that changes while read is skipped: its next event pushes it.
        ``new``: the first sync's files the guest lacks, written without a temporary file."""
        x = expect.wire() if expect else None
        if entry.kind != FILE:
            self.put_op({"o": entry.kind, "e": entry.wire(), "x": x})
            self.agree(entry.path, entry)
            self.stats.pushed += 1
            return
        try:
            fd = fstree.open_file(self.root, entry.path)
        except OSError:
            return  # gone or replaced: its event comes
        try:
            self._stream(fd, entry.path, x, new)
        finally:
            os.close(fd)

    def _stream(self, fd: int, path: str, x: list[object] | None, new: bool) -> None:
        """Sends a file in pieces, holding back the last one until the file is known not to
        have changed while read (then it is sent as final; else the guest drops the pieces and
        the watcher's next event sends the file again). Memory: two pieces, whatever the size."""
        before = os.fstat(fd)
        current = fstree.entry_from_stat(path, before)
        if current is None or current.kind != FILE:
            return
        wired = current.wire()
        held = os.read(fd, READ_CHUNK)
        offset = 0
        while True:
            chunk = os.read(fd, READ_CHUNK) if len(held) == READ_CHUNK else b""
            if not chunk:
                break
            self.put_op({"o": FILE, "e": wired, "x": x, "off": offset, "fin": False}, held)
            offset += len(held)
            held = chunk
        after = os.fstat(fd)
        if (offset + len(held) != current.size or after.st_mtime_ns != before.st_mtime_ns
                or after.st_size != before.st_size):
            if offset:
                self.put_op({"o": "ab", "p": path})
            return
        op: dict[str, Any] = {"o": FILE, "e": wired, "x": x, "off": offset, "fin": True}
        if new and offset == 0:
            op["new"] = True
        self.put_op(op, held)
        self.agree(path, current)
        self.stats.pushed += 1

    def delete_guest(self, path: str, agreed: Entry) -> None:
        if agreed.kind == DIR:
            for child in under(path, self.agreed):
                self.put_op({"o": "rm", "p": child, "x": self.agreed[child].wire()})
                self.agree(child, None)
        self.put_op({"o": "rm", "p": path, "x": agreed.wire()})
        self.agree(path, None)
        self.stats.deleted_guest += 1

    def host_batch(self, paths: list[str]) -> None:
        """One debounced batch of watcher events: renames first (a ``mv`` each, no content
        sent again), then every other path as :meth:`host_changed`."""
        gone: dict[str, Entry] = {}
        appeared: dict[str, Entry] = {}
        for path in paths:
            if path in self.conflicted:
                continue
            with self._each(path):
                h, a = lstat_entry(self.root, path), self.agreed.get(path)
                if h is None and a is not None:
                    gone[path] = a
                elif h is not None and a is None and not self.ignored(path, h):
                    appeared[path] = h
        moved: set[str] = set()
        for old, new in match_renames(gone, appeared, self._host_moves(appeared)):
            self.put_op({"o": "mv", "p": old, "to": new, "x": gone[old].wire()})
            self._moves[old] = appeared[new]
            self.agree(old, None)
            self.agree(new, appeared[new])
            moved.update((old, new))
            self.stats.renamed += 1
        for path in paths:
            if path not in moved:
                with self._each(path):
                    self.host_changed(path)
        if len(self._moves) > 10_000:  # entries whose rename was applied long ago
            self._moves.clear()

    def _host_moves(self, appeared: Mapping[str, Entry]) -> dict[str, str]:
        """new path -> old path of the renames the watcher saw among ``appeared``."""
        return {new: old for new in appeared if (old := self.moves.take(new)) is not None}

    def host_changed(self, path: str) -> None:
        """A watcher event for ``path`` (relative); compares it with the agreed state."""
        h = lstat_entry(self.root, path)
        if self.ignored(path, h) or path in self.conflicted:
            return
        a = self.agreed.get(path)
        if same(h, a):
            return
        if h is None:
            assert a is not None
            self.delete_guest(path, a)
            return
        if a is not None and a.kind == DIR and h.kind != DIR:
            self.delete_guest(path, a)
            a = None
        self.push(h, a)
        if h.kind == DIR:
            # A directory moved in, or made before the watch on it existed: its contents too.
            for e in fstree.walk(self.root, path, self.rules.ignored):
                if not same(e, self.agreed.get(e.path)) and e.path not in self.conflicted:
                    self.push(e, self.agreed.get(e.path))

    # -- guest -> host ------------------------------------------------------------------------
    def guest_changed(self, changes: list[tuple[str, Entry | None]],
                      moves: Mapping[str, str] | None = None) -> None:
        """The guest's ``changes`` message: pulls files, applies dirs/links/deletes locally.
        ``moves`` (new path -> old path) are renames the guest saw happen (inotify's move
        cookies); without them nothing is taken for a rename (the content is fetched)."""
        self.applier.new_message()
        pulls: list[str] = []
        conflicts: list[str] = []
        changes = [(p, None if g is None else g._replace(path=p))
                   for p, g in changes if self.safe(p)]
        changes = self._guest_renames(changes, moves or {})
        for path, g in changes:
            if path in self.conflicted:
                continue
            with self._each(path):
                self._guest_change(path, g, pulls, conflicts)
        self.request(pulls, "pull")
        self.request(conflicts, "conflict")
        self.flush()

    def _guest_change(self, path: str, g: Entry | None, pulls: list[str],
                      conflicts: list[str]) -> None:
        if self.ignored(path, g):
            return
        a = self.agreed.get(path)
        if same(g, a):
            return  # an echo of our own change, or a change undone
        h = lstat_entry(self.root, path)
        if not same(h, a):
            if same(h, g):
                self.agree(path, h)  # both sides made the same change
            else:
                self.conflicted.add(path)
                if not self.pending_gets[path]:
                    conflicts.append(path)
            return
        if g is None:
            assert a is not None
            self.delete_host(path, a)
        elif g.kind == FILE:
            if not self.pending_gets[path]:
                pulls.append(path)
        else:
            self._apply_guest(g, a)

    def _guest_renames(self, changes: list[tuple[str, Entry | None]], moves: Mapping[str, str]
                       ) -> list[tuple[str, Entry | None]]:
        """Applies the renames the guest saw (``moves``) among a batch here (when both paths
        are still as agreed on the host); returns the changes left to handle."""
        gone = {p: a for p, g in changes if g is None and (a := self.agreed.get(p)) is not None
                and p not in self.conflicted}
        appeared = {p: g for p, g in changes if g is not None and p not in self.agreed
                    and p not in self.conflicted and not self.ignored(p, g)}
        done: set[str] = set()
        for old, new in match_renames(gone, appeared, moves):
            with self._each(new):
                if self.applier.rename(old, new, gone[old]) is None:
                    self.agree(old, None)
                    self.agree(new, appeared[new])
                    done.update((old, new))
                    self.stats.renamed += 1
        return [(p, g) for p, g in changes if p not in done]

    def _apply_guest(self, g: Entry, expect: Entry | None) -> None:
        rejected = (self.applier.mkdir(g, expect) if g.kind == DIR
                    else self.applier.symlink(g, expect))
        if rejected is None:
            self.agree(g.path, g)
            self.stats.pulled += 1
        else:
            self.resolve(g.path, g, None)

    def delete_host(self, path: str, agreed: Entry) -> None:
        """The guest deleted ``path``: delete it here unless changed here (then send it back)."""
        if agreed.kind == DIR:
            for child in under(path, self.agreed):
                with self._each(child):
                    self._delete_local(child, self.agreed[child])
        self._delete_local(path, agreed)
        self.stats.deleted_host += 1

    def _delete_local(self, path: str, agreed: Entry) -> None:
        rejected = self.applier.remove(path, agreed)
        if rejected is None:
            self.agree(path, None)
        elif rejected.current is not None:
            # Changed here since: a modification wins over a deletion; the guest gets it back.
            self.push(rejected.current, None)

    def received(self, header: dict[str, Any], data: bytes) -> None:
        """A ``put`` from the guest: the content we asked for with ``get``."""
        self.applier.new_message()
        for op, chunk in wire.split_put(header, data):
            o = op.get("o")
            path = str(op.get("p") if o == "rm" else (op.get("e") or ["?"])[0])
            if o != FILE or op.get("fin", True):
                self._got(path)  # first: an answer that cannot be applied is still an answer
            with self._each(path):
                self._received_op(path, op, chunk)
        self.flush()

    def _received_op(self, path: str, op: dict[str, Any], chunk: bytes) -> None:
        o = op["o"]
        fstree.check_rel(path)
        if o == FILE:
            entry = Entry.from_wire(op["e"])
            final = bool(op.get("fin", True))
            expect = NEVER if path in self.conflicted else self.agreed.get(path)
            rejected = self.applier.file_chunk(entry, expect, int(op.get("off", 0)), chunk,
                                               final)
            if not final:
                return
            if rejected is None:
                self.agree(path, entry)
                self.stats.pulled += 1
                return
            try:
                self.resolve(path, entry, rejected.temp)
            except BaseException:
                if rejected.temp is not None:
                    with contextlib.suppress(*PATH_ERRORS):
                        self.applier.discard(rejected.temp)
                raise
            return
        if o == "rm":
            if path in self.conflicted:
                self.resolve(path, None, None)
            elif (a := self.agreed.get(path)) is not None:
                self.delete_host(path, a)
            return
        g = Entry.from_wire(op["e"])
        if path in self.conflicted:
            self.resolve(path, g, None)
        else:
            self._apply_guest(g, self.agreed.get(path))

    def _got(self, path: str) -> None:
        if self.pending_gets[path] > 1:
            self.pending_gets[path] -= 1
        else:
            self.pending_gets.pop(path, None)

    def rejected(self, path: str, current: Entry | None) -> None:
        """The guest refused a change: it had something else there. Resolve with its version."""
        if not self.safe(path):
            return
        moved_to = self._moves.pop(path, None)
        if moved_to is not None:
            # A refused rename: the new path gets the content; the old one is a conflict.
            self.push(moved_to, None)
        self.conflicted.add(path)
        if not self.pending_gets[path]:
            self.request([path], "conflict")

    # -- conflicts ----------------------------------------------------------------------------
    def resolve(self, path: str, g: Entry | None, temp: str | None) -> None:
        """Both sides changed ``path``: the guest's version is ``g`` (content in ``temp``)."""
        resolve_conflict(self, path, g, temp)

    # -- the first sync -----------------------------------------------------------------------
    def start(self, plan: Plan, host: dict[str, Entry], guest: dict[str, Entry]) -> None:
        """Sends everything the initial plan says; the caller then waits for a barrier."""
        self.agreed = dict(plan.agreed)
        self.dirty = True
        self.applier.new_message()
        for e in plan.push:
            with self._each(e.path):
                self.push(e, guest.get(e.path), new=e.path not in guest)
        for e in plan.delete_guest:
            if self.safe(e.path):
                self.put_op({"o": "rm", "p": e.path, "x": e.wire()})
                self.stats.deleted_guest += 1
        for e in plan.delete_host:
            with self._each(e.path):
                self._delete_local(e.path, e)
        pulls = []
        for g in plan.pull:
            if not self.safe(g.path):
                continue  # the guest's manifest named it: not a path under the root
            h = host.get(g.path)
            if h is not None:
                self.agreed[g.path] = h  # the compare-and-swap base: the host as scanned
            if g.kind == FILE:
                pulls.append(g.path)
            else:
                with self._each(g.path):
                    self._apply_guest(g, h)
        self.request(pulls, "pull")
        for h, _g in plan.conflicts:
            self.conflicted.add(h.path)
        self.request([h.path for h, _ in plan.conflicts], "conflict")
        self.flush()

    @property
    def busy(self) -> bool:
        return any(n > 0 for n in self.pending_gets.values()) or bool(self.conflicted)
