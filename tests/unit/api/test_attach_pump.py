"""The attach/exec pump against a silent container: a client that is killed must free its
stream, and streams that stay must not hold the loop's default executor.

The container is a socket pair standing in for the shim's attach connection (the real
``AttachStream`` and ``Attachment`` read it); the client is a real unix socket pair.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time

from pydeskd.api.streaming import pump
from pydeskd.daemon.containers.attach import Attachment
from pydeskd.shim.client import AttachStream


class Session:
    """One attach: the container's end, the client's end, and the pump's task."""

    def __init__(self, *, stdin: bool = False) -> None:
        self.container, shim_side = socket.socketpair()
        self.attachment = Attachment(AttachStream(shim_side, tty=True), tty=True, stdin=stdin,
                                     stdout=True, stderr=True)
        self.client, self.server = socket.socketpair()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=self.server)
        self.task = asyncio.create_task(pump(self.attachment, reader, writer, ""))

    def close(self) -> None:
        self.container.close()
        self.client.close()


def test_a_killed_client_on_a_silent_container_ends_the_pump() -> None:
    async def main() -> None:
        baseline = threading.active_count()
        sessions = [Session() for _ in range(8)]
        for s in sessions:
            await s.start()
        await asyncio.sleep(0.2)
        for s in sessions:
            s.client.close()  # timeout -s KILL docker attach
        tasks = [s.task for s in sessions if s.task is not None]
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        deadline = time.monotonic() + 5
        while threading.active_count() > baseline and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert threading.active_count() <= baseline
        for s in sessions:
            s.close()

    asyncio.run(main())


def test_a_half_closed_client_still_gets_the_output() -> None:
    async def main() -> None:
        s = Session()
        await s.start()
        s.client.shutdown(socket.SHUT_WR)  # the CLI does this when it has no stdin
        await asyncio.sleep(0.6)  # longer than the hang-up poll
        assert s.task is not None and not s.task.done()
        s.container.sendall(b"late output\n")
        s.client.settimeout(5)
        got = await asyncio.to_thread(s.client.recv, 100)
        assert got == b"late output\n"
        s.container.close()  # the process ends
        await asyncio.wait_for(s.task, 5)
        s.close()

    asyncio.run(main())


def test_live_streams_leave_the_default_executor_free() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        loop.set_default_executor(pool)
        sessions = [Session() for _ in range(4)]
        for s in sessions:
            await s.start()
        await asyncio.sleep(0.2)
        try:
            answer = await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), 2)
            assert answer == 42
        finally:
            for s in sessions:
                s.container.close()
            await asyncio.wait_for(
                asyncio.gather(*(s.task for s in sessions if s.task is not None)), 5)
            for s in sessions:
                s.close()

    asyncio.run(main())
