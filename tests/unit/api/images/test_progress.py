"""The progress renderers and the threaded stream, without a registry."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator

import pytest

from pydeskd.api.progress import (
    PullRenderer,
    PushRenderer,
    blob_status,
    encode,
    human_size,
    progress_bar,
    run_streamed,
)
from pydeskd.containerd.errors import NotFound
from pydeskd.containerd.progress import Event, Status
from pydeskd.containerd.reference import parse_reference

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


@pytest.mark.parametrize(("size", "text"), [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (1234, "1.234kB"), (2_100_000, "2.1MB"),
    (999_999, "1000kB"), (4_329_472, "4.329MB"), (1_500_000_000, "1.5GB"),
])
def test_human_size_is_go_units_with_four_digits(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(("current", "total", "text"), [
    (0, 0, ""),
    (0, 2_100_000, "[>" + " " * 50 + "]       0B/2.1MB"),
    (1_050_000, 2_100_000, "[" + "=" * 25 + ">" + " " * 25 + "]   1.05MB/2.1MB"),
    (2_100_000, 2_100_000, "[" + "=" * 50 + ">]    2.1MB/2.1MB"),
    (3000, 0, "     3kB"),
    (3000, 2000, "[" + "=" * 50 + ">]      3kB"),
])
def test_progress_bar_is_jsonmessage_at_the_daemons_width(current: int, total: int,
                                                          text: str) -> None:
    assert progress_bar(current, total) == text


def test_messages_are_compact_json_lines_with_crlf() -> None:
    line = encode(blob_status("Downloading", "aaaaaaaaaaaa", 1, 2, with_bytes=True))
    assert line.endswith(b"\r\n") and b" " not in line.split(b'"progress"')[0]
    assert list(json.loads(line)) == ["status", "progressDetail", "progress", "id"]
    assert json.loads(encode(blob_status("Waiting", "x"))) == {
        "status": "Waiting", "progressDetail": {}, "id": "x"}


def test_pull_renderer_order_and_dedup() -> None:
    renderer = PullRenderer(parse_reference("busybox:1.36"))
    out = []
    for ev in [Event("1.36", Status.RESOLVING, detail="busybox:1.36"),
               Event(D1, Status.ALREADY_EXISTS),
               Event(D2, Status.WAITING, 0, 10),
               Event(D2, Status.DOWNLOADING, 5, 10),
               Event(D2, Status.DOWNLOADING, 10, 10),
               Event(D2, Status.VERIFYING),
               Event(D2, Status.DOWNLOAD_COMPLETE),
               Event(D1, Status.ALREADY_EXISTS),  # the snapshotter says so too: shown once
               Event(D2, Status.EXTRACTING, 10, 10),
               Event(D2, Status.PULL_COMPLETE)]:
        out += renderer.event(ev)
    out += renderer.done("sha256:" + "c" * 64, downloaded=True)
    assert out[0] == {"status": "Pulling from library/busybox", "id": "1.36"}
    assert [(m.get("id"), m["status"]) for m in out[1:-2]] == [
        ("aaaaaaaaaaaa", "Already exists"),
        ("bbbbbbbbbbbb", "Pulling fs layer"), ("bbbbbbbbbbbb", "Waiting"),
        ("bbbbbbbbbbbb", "Downloading"), ("bbbbbbbbbbbb", "Downloading"),
        ("bbbbbbbbbbbb", "Verifying Checksum"), ("bbbbbbbbbbbb", "Download complete"),
        ("bbbbbbbbbbbb", "Extracting"), ("bbbbbbbbbbbb", "Pull complete")]
    assert out[4]["progressDetail"] == {"current": 5, "total": 10}
    assert out[-2:] == [{"status": "Digest: sha256:" + "c" * 64},
                        {"status": "Status: Downloaded newer image for busybox:1.36"}]


def test_pull_renderer_up_to_date_still_names_the_repository() -> None:
    renderer = PullRenderer(parse_reference("127.0.0.1:5000/test/single"))
    assert renderer.event(Event("latest", Status.RESOLVING)) == []
    assert renderer.done(D1, downloaded=False) == [
        {"status": "Pulling from test/single", "id": "latest"},
        {"status": f"Digest: {D1}"},
        {"status": "Status: Image is up to date for 127.0.0.1:5000/test/single:latest"}]


def test_push_renderer_hides_configs_and_ends_with_the_digest_line_and_aux() -> None:
    renderer = PushRenderer(parse_reference("127.0.0.1:5000/test/x:v1"), hidden=[D2])
    out = renderer.start()
    for ev in [Event(D1, Status.PREPARING), Event(D2, Status.PREPARING),
               Event(D1, Status.PUSHING, 3, 6), Event(D1, Status.PUSHED, 6, 6),
               Event(D2, Status.PUSHED, 1, 1),
               Event(D1, Status.PUSHED, 6, 6, detail="v1: digest: x size: 1")]:
        out += renderer.event(ev)
    out += renderer.done("v1", D2, 527)
    assert out[0] == {"status": "The push refers to repository [127.0.0.1:5000/test/x]"}
    assert [m["status"] for m in out[1:4]] == ["Preparing", "Pushing", "Pushed"]
    assert out[-2:] == [{"status": f"v1: digest: {D2} size: 527"},
                        {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": D2,
                                                       "Size": 527}}]
    mounted = PushRenderer(parse_reference("r:5000/a/b")).event(
        Event(D1, Status.MOUNTED, detail="r:5000/a/c"))
    assert mounted[0]["status"] == "Mounted from a/c"


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


def test_run_streamed_error_before_output_is_raised() -> None:
    def job(emit: object) -> None:
        raise NotFound("manifest for x:latest not found")

    async def main() -> None:
        with pytest.raises(NotFound, match="manifest for x:latest"):
            await run_streamed(job)

    asyncio.run(main())


def test_run_streamed_error_after_output_is_the_last_message() -> None:
    worker: list[str] = []

    def job(emit: object) -> None:
        assert callable(emit)
        worker.append(threading.current_thread().name)
        emit(b"one\r\n")
        emit(b"two\r\n")
        raise NotFound("gone")

    async def main() -> list[bytes]:
        return await collect(await run_streamed(job, name="test-job"))

    chunks = asyncio.run(main())
    assert chunks[:2] == [b"one\r\n", b"two\r\n"]
    assert json.loads(chunks[2]) == {"errorDetail": {"message": "gone"}, "error": "gone"}
    assert worker == ["test-job"]


def test_run_streamed_without_an_error_tail_cuts_the_stream() -> None:
    def job(emit: object) -> None:
        assert callable(emit)
        emit(b"partial tar")
        raise OSError("disk gone")

    async def main() -> list[bytes]:
        got: list[bytes] = []
        with pytest.raises(OSError, match="disk gone"):
            async for chunk in await run_streamed(job, on_error=lambda exc: None):
                got.append(chunk)
        return got

    assert asyncio.run(main()) == [b"partial tar"]
