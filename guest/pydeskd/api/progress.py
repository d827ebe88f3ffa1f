"""Docker's JSON progress streams (pull, push, load, import), rendered from containerd events.

What it is for: the containerd layer reports each blob's progress as ``progress.Event``s from the
thread doing the work; clients (the docker CLI's ``jsonmessage``, docker-py, Compose) expect
Docker's stream of JSON messages, one per line::

    {"status":"Pulling from library/busybox","id":"latest"}
    {"status":"Pulling fs layer","progressDetail":{},"id":"a46fbb00284b"}
    {"status":"Downloading","progressDetail":{"current":1,"total":2},"progress":"[=> ] ..","id":..}
    {"status":"Digest: sha256:..."}
    {"status":"Status: Downloaded newer image for busybox:latest"}

Messages are encoded as the daemon's ``streamformatter`` does (compact JSON, ``\\r\\n``); the
``progress`` bar is ``jsonmessage.JSONProgress.String()`` at the daemon's width (no terminal: 200
columns, so the bar is included; no start time, so no ETA). ``run_streamed`` runs the blocking
work in its own thread and hands the messages to the async response through a queue; an error
before the first message becomes an ordinary HTTP error (the status is not sent yet), an error
after it an ``errorDetail`` message (the status is already 200), as moby's handlers do.

What it must never do: block the work it reports on (renderers are pure and quick), or put a
credential in a message (containerd errors carry none; nothing here adds any).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydeskd.containerd.errors import ContainerdError, InvalidArgument
from pydeskd.containerd.progress import Event, Status
from pydeskd.containerd.reference import Reference, parse_reference

log = logging.getLogger(__name__)

Message = dict[str, Any]
# What a job calls with each chunk it wants sent, from its own thread (``encode`` a message).
Emit = Callable[[bytes], None]

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
# jsonmessage draws the bar only when the "terminal" is wider than 110 columns; the daemon has
# none and uses 200.
_BAR_WIDTH = 50


def human_size(size: float) -> str:
    """go-units ``HumanSize``: decimal units, 4 significant digits (``2.1MB``, ``1.235kB``)."""
    i = 0
    while size >= 1000.0 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{_UNITS[i]}"


def progress_bar(current: int, total: int) -> str:
    """``JSONProgress.String()`` as the daemon renders it (200 columns, no ETA)."""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    filled = min(int(current / total * 100) // 2, _BAR_WIDTH)
    bar = "[" + "=" * filled + ">" + " " * max(_BAR_WIDTH - filled, 0) + "] "
    if current > total:
        return bar + f"{human_size(current):>8}"
    return bar + f"{human_size(current):>8}/{human_size(total)}"


# Go's encoding/json escapes these even inside strings (HTML safety); clients parse either
# way, but the bytes then match Docker's exactly ("[=\u003e   ]").
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


def encode(message: Mapping[str, Any]) -> bytes:
    """One message on the wire, byte for byte as moby's streamformatter writes it (Go's
    ``json.Marshal``: compact, UTF-8, HTML characters escaped; then ``\\r\\n``)."""
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    return text.translate(_GO_ESCAPES).encode() + b"\r\n"


def status(text: str, id: str = "") -> Message:
    """A plain status line (``{"status":"Digest: ..."}``), with an ``id`` if given."""
    return {"status": text, "id": id} if id else {"status": text}


def blob_status(text: str, id: str, current: int = 0, total: int = 0,
                with_bytes: bool = False) -> Message:
    """A per-blob line: ``progressDetail`` is ``{}`` unless the step counts bytes."""
    if not with_bytes:
        return {"status": text, "progressDetail": {}, "id": id}
    out: Message = {"status": text, "progressDetail": {"current": current, "total": total}}
    bar = progress_bar(current, total)
    if bar:
        out["progress"] = bar
    out["id"] = id
    return out


def error(text: str) -> Message:
    """An error after the stream started (the HTTP status is already 200)."""
    return {"errorDetail": {"message": text}, "error": text}


def stream_line(text: str) -> Message:
    """A ``{"stream": ...}`` line (``docker load`` prints these as they are)."""
    return {"stream": text}


# --- pull -----------------------------------------------------------------------------------

_BYTE_STEPS = {Status.DOWNLOADING, Status.EXTRACTING, Status.PUSHING, Status.LOADING}
# A layer reaches one of these once; a second report (the content store and the snapshotter both
# say "Already exists") is not repeated.
_FINAL = {Status.ALREADY_EXISTS, Status.PULL_COMPLETE, Status.PUSHED, Status.LAYER_EXISTS,
          Status.MOUNTED}


class PullRenderer:
    """Turns one pull's events into Docker's messages (not thread-safe: one caller at a time).

    "Pulling from <path>" (id: the tag or digest) comes before the first layer line, so that a
    pull failing to resolve sends nothing and the route can still answer with an HTTP error.
    Each layer gets "Pulling fs layer" when it is first seen (unless it "Already exists").
    "Already exists" lines wait until something is downloaded: a pull that finds everything in
    place says only "Image is up to date", as Docker's does.
    """

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self._started = False
        self._announced: set[str] = set()
        self._final: set[str] = set()
        self._existing: list[Message] = []
        self._downloading = False

    def _header(self) -> list[Message]:
        if self._started:
            return []
        self._started = True
        return [status(f"Pulling from {self.reference.path}", self.reference.reference)]

    def event(self, ev: Event) -> list[Message]:
        if ev.status is Status.RESOLVING or ev.digest in self._final:
            return []
        if ev.status is Status.ALREADY_EXISTS:
            self._final.add(ev.digest)
            line = blob_status(ev.status.value, ev.id)
            if not self._downloading:
                self._existing.append(line)
                return []
            return [line]
        out = self._header()
        if not self._downloading:
            self._downloading = True
            out += self._existing
        if ev.status in _FINAL:
            self._final.add(ev.digest)
        if ev.digest not in self._announced:
            self._announced.add(ev.digest)
            out.append(blob_status("Pulling fs layer", ev.id))
        out.append(blob_status(ev.status.value, ev.id, ev.current, ev.total,
                               ev.status in _BYTE_STEPS))
        return out

    def done(self, target_digest: str, downloaded: bool) -> list[Message]:
        out = self._header()
        if downloaded and not self._downloading:
            out += self._existing  # a new manifest over layers that were all there
        out.append(status(f"Digest: {target_digest}"))
        what = "Downloaded newer image" if downloaded else "Image is up to date"
        out.append(status(f"Status: {what} for {self.reference.familiar}"))
        return out


# --- push -----------------------------------------------------------------------------------


class PushRenderer:
    """Turns one push's events into Docker's messages.

    ``hidden`` digests (the image configs: Docker's push output lists layers only) are not
    shown. The final "<tag>: digest: ... size: N" line and its ``aux`` message come from the
    result, not from the event the containerd layer sends for it.
    """

    def __init__(self, reference: Reference, hidden: Iterable[str] = ()) -> None:
        self.reference = reference
        self._hidden = set(hidden)
        self._final: set[str] = set()

    def hide(self, digests: Iterable[str]) -> None:
        self._hidden.update(digests)

    def start(self) -> list[Message]:
        return [status(f"The push refers to repository [{self.reference.name}]")]

    def event(self, ev: Event) -> list[Message]:
        if ev.digest in self._hidden or ev.digest in self._final:
            return []
        if ev.status is Status.PUSHED and ev.detail:
            return []  # the manifest's own line: rendered by done()
        if ev.status in _FINAL:
            self._final.add(ev.digest)
        text = ev.status.value
        if ev.status is Status.MOUNTED:
            text = f"Mounted from {_repository_path(ev.detail)}"
        return [blob_status(text, ev.id, ev.current, ev.total, ev.status in _BYTE_STEPS)]

    def done(self, tag: str, digest: str, size: int) -> list[Message]:
        return [status(f"{tag}: digest: {digest} size: {size}"),
                {"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": size}}]


def _repository_path(name: str) -> str:
    """``127.0.0.1:5000/test/a`` -> ``test/a``, ``busybox`` -> ``library/busybox`` (Docker
    names the source repository by its path)."""
    try:
        return parse_reference(name, default_tag=None).path
    except InvalidArgument:
        return name


# --- load -----------------------------------------------------------------------------------


def load_event(ev: Event) -> list[Message]:
    """``docker load`` without ``quiet``: a "Loading layer" bar per layer."""
    if ev.status is not Status.LOADING:
        return []
    return [blob_status(ev.status.value, ev.id, ev.current, ev.total, True)]


# --- running blocking work behind a streamed response ---------------------------------------


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()


def error_text(exc: BaseException) -> str:
    """What a client sees of an error that reaches an already started stream."""
    return str(exc) or type(exc).__name__


def json_error(exc: BaseException) -> bytes | None:
    """The default end of a failed JSON stream: an ``errorDetail`` message."""
    return encode(error(error_text(exc)))


def emit_messages(emit: Emit, messages: Iterable[Message]) -> None:
    for message in messages:
        emit(encode(message))


async def run_streamed(job: Callable[[Emit], None], *, name: str = "api-stream",
                       on_error: Callable[[BaseException], bytes | None] = json_error,
                       ) -> AsyncIterator[bytes]:
    """Start ``job(emit)`` in its own thread; return the chunks it emits, as they come.

    Waits for the first chunk: if ``job`` fails before emitting anything, its exception is
    raised here (the route answers with an HTTP error). A failure after that ends the stream
    with ``on_error(exc)`` (an ``errorDetail`` message), or, when that gives None (a tar
    stream has no way to say it), by raising, which cuts the connection short so the client
    sees a truncated body rather than a valid-looking one. A client that goes away does not
    stop the job (a pull runs to its end, as containerd's would under its lease); its chunks
    are dropped.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def put(item: object) -> None:
        # The loop may be closed when a long job ends after its client and the app went away.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            job(put)
        except BaseException as e:  # handed over to the response, never lost
            put(_Failed(e))
        else:
            put(_DONE)

    threading.Thread(target=run, name=name, daemon=True).start()
    first = await queue.get()
    if isinstance(first, _Failed):
        raise first.error

    async def chunks() -> AsyncIterator[bytes]:
        item = first
        while item is not _DONE:
            if isinstance(item, _Failed):
                exc = item.error
                log.log(logging.INFO if isinstance(exc, ContainerdError) else logging.ERROR,
                        "streamed request failed: %s", error_text(exc),
                        exc_info=None if isinstance(exc, ContainerdError) else exc)
                last = on_error(exc) if isinstance(exc, Exception) else None
                if last is None:
                    raise exc
                yield last
                return
            assert isinstance(item, bytes)
            yield item
            item = await queue.get()

    return chunks()
