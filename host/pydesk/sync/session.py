"""One sync session: a host root kept equal to its guest copy, for as long as the agent runs.

What it is for: :class:`Session` starts the guest side through the transport factory, runs the
first sync (hello, the guest's manifest, the three-way plan against the saved agreed state, the
transfers, a barrier), then follows both sides: a watchdog observer on the host (events coalesced
per path, ~15 ms of quiet) and the guest's inotify reports. One thread owns the :class:`Engine`;
a reader thread turns the stream into messages, the observer thread only queues paths.
The agreed state is saved only on a *durable* barrier's answer (the guest made everything before
it durable and recorded the generation), and trusted at the next start only for the same copy
(``safety``).
What it must never do: touch the engine from another thread, or report the first sync done
before the guest acknowledged every change of it (``barrier``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydesk.sync.engine import Engine
from pydesk.sync.errors import SessionFailed
from pydesk.sync.ignore import IgnoreRules
from pydesk.sync.plan import initial_plan
from pydesk.sync.safety import spare_host_deletions, trusted_base
from pydesk.sync.state import StateFile
from pydesk.sync.status import SessionStatus, State
from pydesk.sync.transport import Transport, TransportFactory
from pydesk.sync.watcher import start_observer
from pydeskd.syncd import fstree, wire
from pydeskd.syncd.fstree import DIR, Entry

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.015
MAX_DELAY_S = 0.1
SAVE_EVERY_S = 2.0


class Session:
    def __init__(self, host_root: Path, guest_root: str, factory: TransportFactory, *,
                 guest_argv: list[str], state: StateFile, rules: IgnoreRules,
                 inplace: bool = False,
                 report: Callable[[str, str], None] | None = None) -> None:
        self.host_root = str(host_root)
        self.guest_root = guest_root
        self.factory = factory
        self.guest_argv = guest_argv
        self.statefile = state
        self.rules = rules
        self.inplace = inplace
        self.report = report or (lambda message, error: None)
        self.state = State.STARTING
        self.error = ""
        self.ready = threading.Event()
        self.bytes_sent = self.bytes_received = 0
        self.messages_sent = self.messages_received = 0
        self.first_sync_s = 0.0
        self.phases: dict[str, float] = {}
        """Seconds of each step of the first sync (guest_start, guest_scan, host_scan_plan,
        send, apply_wait): where a slow first sync spends its time."""
        self._queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._closing = threading.Event()
        self._transport: Transport | None = None
        self._observer: Any = None
        self.engine = Engine(self.host_root, rules, self._send)
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"sync {self.host_root}")
        self._waiters: dict[int, threading.Event] = {}
        # durable barrier id -> (agreed state to save, its generation, whether it marks use)
        self._saves: dict[int, tuple[dict[str, Entry], int, bool]] = {}
        self._next_barrier = 0
        self.copy_id = ""  # the guest copy's identity (its hello)
        self._gen = 0  # the generation of the last durable barrier sent

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout: float) -> None:
        """Blocks until the first full sync is done; raises SessionFailed if it failed."""
        if not self.ready.wait(timeout):
            raise SessionFailed(f"the first sync of {self.host_root} did not finish in "
                                f"{timeout:.0f} s", hint="a very large tree? see pydesk doctor")
        if self.state is not State.LIVE:
            raise SessionFailed(f"sync of {self.host_root} failed: {self.error}")

    def flush(self, rel: str = "", timeout: float = 30.0) -> None:
        """Makes sure ``rel`` (and every host change already seen) reached the guest: the
        session syncs it at once and waits for the guest to acknowledge (a barrier)."""
        done = threading.Event()
        self._queue.put(("flush", rel, done))
        if not done.wait(timeout):
            raise SessionFailed(f"{self.host_root}: the guest did not acknowledge a sync "
                                f"within {timeout:.0f} s")
        if self.state is not State.LIVE:
            raise SessionFailed(f"sync of {self.host_root} failed: {self.error}")

    def close(self) -> None:
        self._closing.set()
        self._queue.put(("close", None, None))
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def status(self) -> SessionStatus:
        st = self.engine.stats
        return SessionStatus(self.host_root, self.guest_root, str(self.state),
                             len(self.engine.agreed), st.pushed, st.pulled, st.conflicts,
                             self.bytes_sent, self.bytes_received, self.messages_sent,
                             self.messages_received, self.first_sync_s,
                             self.error or st.last_error)

    # -- I/O ----------------------------------------------------------------------------------
    def _send(self, frame: bytes) -> None:
        assert self._transport is not None
        try:
            self._transport.send(frame)
        except OSError as e:
            raise SessionFailed(f"the guest side stopped: {e}") from e
        self.bytes_sent += len(frame)
        self.messages_sent += 1

    def _reader(self, transport: Transport) -> None:
        reader = wire.FrameReader()
        try:
            while chunk := transport.recv(1 << 20):
                self.bytes_received += len(chunk)
                for header, data in reader.feed(chunk):
                    self._queue.put(("msg", header, data))
        except (OSError, wire.ProtocolError) as e:
            self._queue.put(("eof", str(e), None))
            return
        self._queue.put(("eof", "the guest side ended the stream", None))

    def _next(self, timeout: float | None) -> tuple[str, Any, Any] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    # -- the session thread -------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._transport = self.factory(self.guest_argv)
            threading.Thread(target=self._reader, args=(self._transport,), daemon=True,
                             name=f"sync-reader {self.host_root}").start()
            self._start_watching()
            started = time.monotonic()
            self._first_sync()
            self.first_sync_s = time.monotonic() - started
            self.state = State.LIVE
            self.ready.set()
            self._live()
        except _Closed:
            pass
        except Exception as e:  # the session's error is its status, shown by doctor
            diag = self._transport.diagnostics() if self._transport else ""
            self.error = f"{e}" + (f" (guest: {diag.strip()[-300:]})" if diag.strip() else "")
            if not self._closing.is_set():
                log.error("sync of %s failed: %s", self.host_root, self.error)
            self.state = State.FAILED
        finally:
            self.ready.set()
            self._shutdown()
            for waiter in self._waiters.values():
                waiter.set()

    def _start_watching(self) -> None:
        # A file bind watches its directory only, not everything below it.
        self._observer = start_observer(self.host_root, self._queue,
                                        recursive=self.rules.only is None)

    def _shutdown(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._transport is not None:
            if self.state is State.LIVE:
                with contextlib.suppress(SessionFailed):
                    self._send(wire.encode({"t": "bye"}))
            self._transport.close()
        self.engine.applier.abort_all()
        if self.state is not State.FAILED:
            self.state = State.CLOSED

    def _expect(self, kind: str, deferred: list[tuple[str, Any, Any]],
                timeout: float = 120.0) -> tuple[dict[str, Any], bytes]:
        """Waits for a message of ``kind``, handling or deferring the others."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._next(max(0.0, deadline - time.monotonic()))
            if item is None:
                raise SessionFailed(f"no {kind!r} from the guest side in {timeout:.0f} s")
            if self._closing.is_set():
                raise SessionFailed("closed during the first sync")
            what, header, data = item
            if what == "msg" and header["t"] == kind:
                self.messages_received += 1
                return header, data
            if (what == "msg" and header["t"] == "changes") or what in ("fs", "flush"):
                deferred.append(item)
            else:
                self._dispatch(item)

    def _first_sync(self) -> None:
        self.state = State.SYNCING
        deferred: list[tuple[str, Any, Any]] = []
        self._send(wire.encode({"t": "hello", "v": wire.PROTOCOL_VERSION,
                                "ignore": self.rules.wire(), "inplace": self.inplace}))
        began = time.monotonic()
        hello, _ = self._expect("hello", deferred, timeout=60)
        self.phases["guest_start"] = time.monotonic() - began
        if hello.get("v") != wire.PROTOCOL_VERSION:
            raise SessionFailed(f"the guest speaks sync protocol {hello.get('v')}, "
                                f"not {wire.PROTOCOL_VERSION}", hint="rebuild the guest image")
        self.copy_id, guest_gen = str(hello.get("id", "")), int(hello.get("gen", 0))
        self._send(wire.encode({"t": "scan"}))
        guest: dict[str, Entry] = {}
        while True:
            piece, _ = self._expect("manifest", deferred)
            for raw in piece["entries"]:
                e = Entry.from_wire(raw)
                if not self.rules.ignored(e.path, e.kind == DIR):
                    guest[e.path] = e
            if not piece.get("more"):
                break
        self.phases["guest_scan"] = time.monotonic() - began - self.phases["guest_start"]
        mark = time.monotonic()
        host = fstree.scan(self.host_root, self.rules.ignored)
        saved = self.statefile.read()
        self._gen = max(saved.gen, guest_gen)
        base = trusted_base(saved, self.copy_id, guest_gen)
        if saved.entries and not base:
            self._notice(f"the guest copy of {self.host_root} is not the one last synced (new, "
                         "emptied or older): merging both sides, nothing deleted")
        plan = initial_plan(host, guest, base)
        spared = spare_host_deletions(plan, len(host))
        if spared:
            self._notice(f"sync of {self.host_root}: the guest copy lacks {len(spared)} of the "
                         f"{len(host)} host paths; kept them on the host and sent them back "
                         "instead of deleting them")
        self.phases["host_scan_plan"] = time.monotonic() - mark
        mark = time.monotonic()
        self.engine.start(plan, host, guest)
        self.phases["send"] = time.monotonic() - mark
        while True:
            # Done when nothing is awaited and nothing was sent after the barrier (a conflict
            # resolved while it was on its way pushes the host's version after it).
            sent = self._barrier(deferred)
            if not self.engine.busy and self.messages_sent == sent:
                break
        self.phases["apply_wait"] = time.monotonic() - mark - self.phases["send"]
        # Saved when the guest says it is on disk (the live loop gets the answer).
        self._request_save(mark_used=False)
        for item in deferred:
            self._queue.put(item)

    def _barrier(self, deferred: list[tuple[str, Any, Any]]) -> int:
        """Sends a barrier and waits for it; returns the message count right after it."""
        self._next_barrier += 1
        wanted = self._next_barrier
        self._send(wire.encode({"t": "barrier", "id": wanted}))
        sent = self.messages_sent
        while True:
            header, _ = self._expect("barrier", deferred)
            if header.get("id") == wanted:
                return sent

    def _dispatch(self, item: tuple[str, Any, Any]) -> None:
        what, header, data = item
        if what == "eof":
            raise SessionFailed(f"the guest side stopped: {header}")
        if what == "close":
            raise _Closed()
        if what == "fs":
            self.engine.host_changed(header)
            self.engine.flush()
            return
        self.messages_received += 1
        kind = header["t"]
        if kind == "put":
            self.engine.received(header, data)
        elif kind == "changes":
            moves = header.get("mv")
            self.engine.guest_changed([(str(p), Entry.from_wire(e) if e else None)
                                       for p, e in header["c"]],
                                      {str(new): str(old) for new, old in moves.items()}
                                      if isinstance(moves, dict) else None)
        elif kind == "reject":
            cur = Entry.from_wire(header["cur"]) if header.get("cur") else None
            self.engine.rejected(str(header["p"]), cur)
            self.engine.flush()
        elif kind == "error":
            self.engine.stats.guest_errors += 1
            self.engine.stats.last_error = f"guest: {header.get('path', '')}: " \
                                           f"{header.get('message')}"
            log.warning("sync of %s: %s", self.host_root, self.engine.stats.last_error)
            if header.get("path"):
                self.engine.agreed.pop(str(header["path"]), None)
        elif kind == "barrier":
            barrier = int(header.get("id", -1))
            waiter = self._waiters.pop(barrier, None)
            if waiter is not None:
                waiter.set()
            pending = self._saves.pop(barrier, None)
            if pending is None:
                return
            if header.get("durable") and int(header.get("gen", -1)) >= pending[1]:
                self._save_confirmed(*pending)
            else:
                self.engine.dirty = True  # not on the guest's disk: the next save tries again

    def _notice(self, message: str) -> None:
        log.warning("%s", message)
        self.report(message, "")

    def _request_save(self, mark_used: bool = True) -> None:
        """Saves the agreed state once the guest confirmed it: a snapshot now, written when
        the durable barrier sent after it comes back. Saving an optimistic state (a change sent
        but not yet applied, or applied but not yet on the guest's disk) could make a restart
        take the guest's older version for the newer one."""
        self.engine.flush()
        self._next_barrier += 1
        self._gen += 1
        self._saves[self._next_barrier] = (dict(self.engine.agreed), self._gen, mark_used)
        self.engine.dirty = False
        self._send(wire.encode({"t": "barrier", "id": self._next_barrier, "durable": True,
                                "gen": self._gen}))

    def _save_confirmed(self, snapshot: dict[str, Entry], gen: int, mark_used: bool) -> None:
        # A path refused meanwhile has no agreed state until its conflict is resolved.
        for path in self.engine.conflicted:
            snapshot.pop(path, None)
        self.statefile.save(snapshot, self.copy_id, gen)
        if mark_used:  # the sync carried a change: the root is in use
            self.statefile.mark_used()

    def _live(self) -> None:
        pending: dict[str, None] = {}
        first = last = 0.0
        last_save = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                timeout = SAVE_EVERY_S
                if pending:
                    timeout = max(0.0, min(last + DEBOUNCE_S, first + MAX_DELAY_S) - now)
                item = self._next(timeout)
                while item is not None:
                    if item[0] == "fs":
                        if not pending:
                            first = time.monotonic()
                        last = time.monotonic()
                        pending[item[1]] = None
                    elif item[0] == "flush":
                        self.engine.host_batch([*pending, *([item[1]] if item[1] else [])])
                        self.engine.flush()
                        pending = {}
                        self._next_barrier += 1
                        self._waiters[self._next_barrier] = item[2]
                        self._send(wire.encode({"t": "barrier", "id": self._next_barrier}))
                    else:
                        self._dispatch(item)
                    item = self._next(0) if self._queue.qsize() else None
                now = time.monotonic()
                if pending and now >= min(last + DEBOUNCE_S, first + MAX_DELAY_S):
                    self.engine.host_batch(list(pending))
                    self.engine.flush()
                    pending = {}
                if self.engine.dirty and now - last_save >= SAVE_EVERY_S:
                    self._request_save()
                    last_save = now
        except _Closed:
            self._final_save()

    def _final_save(self, timeout: float = 5.0) -> None:
        """At close: one last confirmed save (the guest still answers), else none (the last
        confirmed state is older, which is safe)."""
        if not (self.engine.dirty or self._saves):
            return
        self._request_save()
        deadline = time.monotonic() + timeout
        while self._saves:
            item = self._next(max(0.0, deadline - time.monotonic()))
            if item is None:
                return
            if item[0] in ("msg", "eof"):
                try:
                    self._dispatch(item)
                except SessionFailed:
                    return


class _Closed(Exception):
    pass
