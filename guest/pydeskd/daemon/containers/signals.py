"""Signal names and numbers as Docker accepts them: ``SIGHUP``, ``HUP``, ``hup``, ``1``.

Pure; no I/O. Raises InvalidArgument with Docker's message for anything else.
"""

from __future__ import annotations

import signal

from pydeskd.containerd.errors import InvalidArgument

_BY_NAME: dict[str, int] = {
    s.name: int(s.value) for s in signal.Signals if not s.name.startswith("SIG_")}
_BY_NAME.setdefault("SIGIOT", int(signal.SIGABRT))
_BY_NAME.setdefault("SIGPOLL", int(signal.SIGIO))
SIGRTMIN = signal.SIGRTMIN.value
SIGRTMAX = signal.SIGRTMAX.value


def parse_signal(text: str | int | None, default: int = signal.SIGKILL) -> int:
    """A signal number from Docker's forms; "" or None is ``default``."""
    if text is None or text == "":
        return default
    if isinstance(text, int):
        number = text
    elif text.isdigit():
        number = int(text)
    else:
        name = text.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
            base = SIGRTMIN if name.startswith("SIGRTMIN") else SIGRTMAX
            offset = name[9:]
            if offset.isdigit():
                number = base + int(offset) if base == SIGRTMIN else base - int(offset)
                if SIGRTMIN <= number <= SIGRTMAX:
                    return number
            raise InvalidArgument(f"Invalid signal: {text}")
        if name not in _BY_NAME:
            raise InvalidArgument(f"Invalid signal: {text}")
        return _BY_NAME[name]
    if number < 1 or number > SIGRTMAX:
        raise InvalidArgument(f"Invalid signal: {text}")
    return number
