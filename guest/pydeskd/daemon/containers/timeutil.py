"""Times as the Docker API writes and reads them (RFC 3339 with nanoseconds, or unix seconds).

Pure; no I/O.
"""

from __future__ import annotations

import calendar
import re
import time

from pydeskd.containerd.errors import InvalidArgument

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$")


def parse_rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch; without a zone the time is UTC. Raises ValueError."""
    m = _RFC3339.match(text.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, sec, frac, zone = m.groups()
    secs = calendar.timegm((int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                            int(sec or 0), 0, 0, 0))
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "+" else 1
        digits = zone[1:].replace(":", "")
        secs += sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def parse_api_time(text: str, now: float | None = None) -> int:
    """``since``/``until`` as the API takes them: unix seconds (``1700000000.123``), RFC 3339,
    or a Go duration before now (``10m``, ``1h30m``, ``5s``) as the CLI sends relative times
    already converted, but clients of the raw API may not. Nanoseconds since the epoch;
    raises InvalidArgument."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        whole, _, frac = text.partition(".")
        return int(whole) * 1_000_000_000 + int((frac or "0")[:9].ljust(9, "0"))
    duration = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms))+", text)
    if duration:
        total = 0.0
        for value, _, unit in re.findall(r"(\d+(\.\d+)?)(ms|h|m|s)", text):
            total += float(value) * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[unit]
        base = time.time() if now is None else now
        return int((base - total) * 1_000_000_000)
    try:
        return parse_rfc3339_ns(text)
    except ValueError:
        raise InvalidArgument(f"invalid time value: {text}") from None


def created_unix(created: str) -> int:
    try:
        return parse_rfc3339_ns(created) // 1_000_000_000
    except ValueError:
        return 0
