"""Streams the container and exec routes hold open: the attach/exec pump between a hijacked
socket and a container's stdio, an attach's past log, and the helpers that keep a stream's
blocking work from outliving its client.

What it is for: a client may leave at any time (a killed ``docker attach``, a closed
``wait``); what served it -- a thread blocked in a read or a wait -- must learn that and end,
and must not come from a bounded pool that every other request needs.

What it must never do: block the event loop, or buffer a stream without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import select
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from pydeskd.daemon.containers.attach import DetachScanner, frame, parse_detach_keys
from pydeskd.daemon.logs import LogEntry
from pydeskd.shim.protocol import Stream

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoppableStream(StreamingResponse):
    """A stream whose producer is told (``stop``) when the client goes away. Cancelling the
    response cannot interrupt a worker thread blocked in a wait or a log follow; the thread
    polls ``stop`` and ends."""

    def __init__(self, content: Any, stop: threading.Event, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.stop = stop

    async def listen_for_disconnect(self, receive: Any) -> None:
        try:
            await super().listen_for_disconnect(receive)
        finally:
            self.stop.set()


async def in_own_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread rather than the bounded worker pool (for calls that may block
    for as long as a container runs). Cancelling the await does not stop ``fn``: make it
    poll for that."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="pydeskd-blocking", daemon=True).start()
    return await future


LOG_BATCH = 256 << 10  # bytes of past log read per worker call, written before the next


async def send_logs(entries: Iterator[LogEntry], tty: bool, writer: Any) -> None:
    """A container's past log on the raw stream (``attach?logs=1``): read by workers in
    batches of about ``LOG_BATCH`` bytes, each written and drained before the next is read,
    so neither the loop nor memory carries the whole log."""

    def batch() -> bytes:
        out = bytearray()
        for entry in entries:
            stream = Stream.STDERR if entry.stream == "stderr" else Stream.STDOUT
            out += entry.data if tty else frame(stream, entry.data)
            if len(out) >= LOG_BATCH:
                break
        return bytes(out)

    try:
        while data := await run_in_threadpool(batch):
            writer.write(data)
            await writer.drain()
    finally:
        close = getattr(entries, "close", None)
        if close is not None:
            await run_in_threadpool(close)  # the log's files


async def pump(attachment: Any, reader: Any, writer: Any, detach_keys: str,
               stdin_once: bool = True) -> None:
    """Copies the client's bytes to the process's stdin (until EOF or the detach keys) and the
    process's output to the client (until it ends, or the client is gone).

    The output is read by a thread of its own (a read blocks until the process prints, which
    may be never: the bounded default executor would run dry). After the client's EOF the
    stream goes on (the CLI half-closes once its stdin ends) until the socket hangs up."""
    loop = asyncio.get_running_loop()
    # As moby: the detach keys are looked for only with a tty; without one, stdin is data
    # (``docker run -i IMAGE cat < binary`` must pass 0x10 0x11 through).
    scanner = DetachScanner(parse_detach_keys(detach_keys)
                            if attachment.stdin and attachment.tty else b"")
    done = asyncio.Event()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_OUTPUT_QUEUE)
    stopped = threading.Event()
    finished: asyncio.Future[None] = loop.create_future()

    async def client_to_process() -> None:
        while not done.is_set():
            try:
                data = await reader.read(65536)
            except (ConnectionError, OSError):
                done.set()
                return
            if not data:
                if attachment.stdin and stdin_once:
                    with contextlib.suppress(OSError):
                        await run_in_threadpool(attachment.close_stdin)
                await _until_hangup(writer, done)
                return
            forward = scanner.feed(data)
            if forward and attachment.stdin:
                await run_in_threadpool(attachment.send, forward)
            if scanner.detached:
                done.set()
                return

    def put(item: bytes | None) -> bool:
        """Hands ``item`` to the loop, waiting while the queue is full (back-pressure);
        False once the pump has stopped."""
        try:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        except RuntimeError:  # the loop is closed
            return False
        while not stopped.is_set():
            try:
                future.result(_STOP_POLL)
                return True
            except concurrent.futures.TimeoutError:
                continue
        future.cancel()
        return False

    def produce() -> None:
        try:
            for chunk in attachment.output():
                if not put(chunk):
                    return
        except Exception as exc:  # the stream broke or was closed under us: the output ends
            log.debug("attach output ended: %s", exc)
        finally:
            put(None)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, finished)

    threading.Thread(target=produce, name="attach-output", daemon=True).start()
    feeder = asyncio.ensure_future(client_to_process())
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(done.wait())
            finished_first, _ = await asyncio.wait({getter, stopper},
                                                   return_when=asyncio.FIRST_COMPLETED)
            if getter not in finished_first:
                getter.cancel()
                return
            stopper.cancel()
            chunk = getter.result()
            if chunk is None:
                return
            writer.write(chunk)
            await writer.drain()
    finally:
        done.set()
        stopped.set()
        feeder.cancel()
        attachment.close()  # wakes the output thread's read
        await asyncio.wait({finished}, timeout=5)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_OUTPUT_QUEUE = 16  # chunks of output (64 KiB each at most) held for a slow client
_STOP_POLL = 0.5    # how often a blocked output thread checks whether the pump stopped
_HANGUP_POLL = 0.25


def hung_up(writer: Any) -> bool:
    """The client's socket is gone both ways (not only half-closed). A unix socket reports
    POLLHUP once its peer is closed; a TCP peer's close reads as a half-close until a write
    fails."""
    if writer.is_closing():
        return True
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLHUP | select.POLLERR)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


async def _until_hangup(writer: Any, done: asyncio.Event) -> None:
    """After the client's EOF: set ``done`` when its socket hangs up (a killed ``docker
    attach``), so a silent container does not hold the stream forever."""
    while not done.is_set():
        if hung_up(writer):
            done.set()
            return
        await asyncio.sleep(_HANGUP_POLL)
