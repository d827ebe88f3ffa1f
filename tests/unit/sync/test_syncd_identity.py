"""The guest side's copy identity: made at hello, kept across sessions, and a durable barrier
flushes the disk before it records the generation and answers (review finding 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pydeskd.syncd import wire
from pydeskd.syncd.identity import XATTR, CopyIdentity
from pydeskd.syncd.server import Server


class Recorder:
    """Stands in for syncfs (which needs no root but flushes the whole disk) and records the
    order of events against the messages the server sends."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.fail = False

    def __call__(self, path: str) -> None:
        self.events.append(f"flush {os.path.basename(path)}")
        if self.fail:
            raise OSError(5, "I/O error")


def serve(root: Path, rec: Recorder) -> tuple[Server, list[dict[str, Any]]]:
    server = Server(str(root), infd=-1, outfd=-1, flush_disk=rec)
    sent: list[dict[str, Any]] = []

    def msg(header: dict[str, Any], data: bytes = b"") -> None:
        rec.events.append(f"send {header['t']}")
        sent.append(header)

    server.msg = msg  # type: ignore[method-assign]
    root.mkdir(exist_ok=True)
    return server, sent


def hello(server: Server) -> None:
    server.handle({"t": "hello", "v": wire.PROTOCOL_VERSION}, b"")


def test_hello_makes_an_identity_once_and_reports_it(tmp_path: Path) -> None:
    server, sent = serve(tmp_path / "copy", Recorder())
    hello(server)
    first = sent[-1]
    assert len(first["id"]) == 32 and first["gen"] == 0
    again, sent2 = serve(tmp_path / "copy", Recorder())
    hello(again)
    assert sent2[-1]["id"] == first["id"]  # the same copy, the same identity
    os.removexattr(tmp_path / "copy", XATTR)  # as good as a copy made anew
    third, sent3 = serve(tmp_path / "copy", Recorder())
    hello(third)
    assert sent3[-1]["id"] != first["id"] and sent3[-1]["gen"] == 0


def test_a_durable_barrier_flushes_before_it_records_and_answers(tmp_path: Path) -> None:
    rec = Recorder()
    server, sent = serve(tmp_path / "copy", rec)
    hello(server)
    rec.events.clear()
    server.handle({"t": "barrier", "id": 1}, b"")  # a plain one: no flush (the latency path)
    server.handle({"t": "barrier", "id": 2, "durable": True, "gen": 3}, b"")
    server.settle()
    assert rec.events == ["send barrier", "flush copy", "send barrier"]
    assert sent[-2] == {"t": "barrier", "id": 1}
    assert sent[-1] == {"t": "barrier", "id": 2, "durable": True, "gen": 3}
    assert json.loads(os.getxattr(tmp_path / "copy", XATTR))["gen"] == 3
    server.handle({"t": "barrier", "id": 3, "durable": True, "gen": 2}, b"")
    server.settle()
    assert sent[-1]["gen"] == 3  # generations never go back


def test_a_failed_flush_claims_nothing(tmp_path: Path) -> None:
    rec = Recorder()
    server, sent = serve(tmp_path / "copy", rec)
    hello(server)
    rec.fail = True
    server.handle({"t": "barrier", "id": 9, "durable": True, "gen": 1}, b"")
    server.settle()
    assert sent[-2]["t"] == "error" and "durable" in sent[-2]["message"]
    assert sent[-1] == {"t": "barrier", "id": 9, "gen": 0}  # not durable: the host won't save
    assert json.loads(os.getxattr(tmp_path / "copy", XATTR))["gen"] == 0


@pytest.mark.parametrize("raw", [b"{not json", b'{"id": 3, "gen": 1}',
                                 b'{"id": "short", "gen": 1}'])
def test_a_broken_identity_is_replaced(tmp_path: Path, raw: bytes) -> None:
    os.setxattr(tmp_path, XATTR, raw)
    ident = CopyIdentity(str(tmp_path), Recorder())
    ident.load()
    assert len(ident.copy_id) == 32 and ident.gen == 0
    assert json.loads(os.getxattr(tmp_path, XATTR))["id"] == ident.copy_id


def test_the_real_syncfs_works_on_this_filesystem(tmp_path: Path) -> None:
    from pydeskd.syncd.identity import syncfs

    syncfs(str(tmp_path))
    with pytest.raises(OSError):
        syncfs(str(tmp_path / "missing"))


def test_a_slow_disk_flush_holds_up_neither_applies_nor_plain_barriers(tmp_path: Path) -> None:
    import threading

    release = threading.Event()
    rec = Recorder()

    def slow(path: str) -> None:
        rec(path)
        assert release.wait(10)

    server, sent = serve(tmp_path / "copy", rec)
    server.identity.flush_disk = slow
    hello(server)
    server.handle({"t": "barrier", "id": 1, "durable": True, "gen": 1}, b"")
    server.handle({"t": "barrier", "id": 2}, b"")  # a container start waiting for its files
    assert sent[-1] == {"t": "barrier", "id": 2}
    release.set()
    server.settle()
    assert sent[-1] == {"t": "barrier", "id": 1, "durable": True, "gen": 1}
