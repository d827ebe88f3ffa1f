"""The shim's own diagnostics: one line per message on stderr (``<state dir>/shim.log``).

Not :mod:`logging`: importing it (with traceback) costs ~7 ms, measured with
``python -X importtime``, and a shim starts for every container. Same call shape as a logger
(``debug``/``info``/``warning``/``exception`` with %-style arguments).
This module must never write anywhere but stderr.
"""

from __future__ import annotations

import sys
import threading
import time

_state = {"level": 30}  # warning; --debug sets 10


def set_debug(enabled: bool) -> None:
    _state["level"] = 10 if enabled else 30


def _emit(level: str, msg: str, args: tuple[object, ...]) -> None:
    text = msg % args if args else msg
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    sys.stderr.write(f"{stamp} {threading.current_thread().name} {level} {text}\n")
    sys.stderr.flush()


def debug(msg: str, *args: object) -> None:
    if _state["level"] <= 10:
        _emit("DEBUG", msg, args)


def info(msg: str, *args: object) -> None:
    if _state["level"] <= 20:
        _emit("INFO", msg, args)


def warning(msg: str, *args: object) -> None:
    _emit("WARNING", msg, args)


def exception(msg: str, *args: object) -> None:
    """An error with the traceback of the exception being handled."""
    import traceback

    _emit("ERROR", msg, args)
    sys.stderr.write(traceback.format_exc())
    sys.stderr.flush()
