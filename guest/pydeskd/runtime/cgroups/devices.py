"""Device rules -> one device policy (a default plus exceptions), as the v1 kernel computes it.

The OCI rule list is applied in order the way the v1 devices controller applies writes to
``devices.allow``/``devices.deny``: a rule for all devices ("a *:* rwm") sets the default and
clears the exceptions; a rule that agrees with the default removes matching exceptions (same
type and numbers; the kernel cannot punch a hole in a wildcard); any other rule adds an
exception. Both back ends use the result, so v1 and v2 (eBPF) containers see the same devices.
Pure functions only.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs start-up time: mypy only (see record.py)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import NamedTuple

    from pydeskd.runtime.spec import DeviceRule
else:
    from pydeskd.runtime.record import NamedTuple

ALL_ACCESS = frozenset("rwm")


class DeviceException(NamedTuple):
    type: str  # "c" or "b"
    major: int | None  # None: any
    minor: int | None
    access: frozenset[str]

    def line(self) -> str:
        """The v1 ``devices.allow``/``devices.deny`` line, e.g. "c 1:3 rwm"."""
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {''.join(a for a in 'rwm' if a in self.access)}"


class DevicePolicy(NamedTuple):
    default_allow: bool
    exceptions: tuple[DeviceException, ...]  # allowed when the default denies, and vice versa

    def allows(self, kind: str, major: int, minor: int, access: str) -> bool:
        """What the v1 kernel decides for ``access`` (subset of "rwm") to a device."""
        wanted = set(access)
        for ex in self.exceptions:
            if ex.type != kind or ex.major not in (None, major) or ex.minor not in (None, minor):
                continue
            if self.default_allow and wanted & ex.access:
                return False  # a deny exception matches on any overlap
            if not self.default_allow and wanted <= ex.access:
                return True  # an allow exception must cover everything asked
        return self.default_allow


def device_policy(rules: Iterable[DeviceRule]) -> DevicePolicy:
    """The policy the rules produce, starting from deny-all as runc does."""
    default_allow = False
    exceptions: list[DeviceException] = []
    for rule in rules:
        access = frozenset(rule.access)
        if rule.type == "a" and rule.major is None and rule.minor is None \
                and access == ALL_ACCESS:
            default_allow = rule.allow
            exceptions = []
            continue
        # A partial "a" rule means both kinds; the kernel would read any "a" line as all devices.
        for kind in ("c", "b") if rule.type == "a" else (rule.type,):
            _apply(exceptions, default_allow, rule.allow,
                   DeviceException(kind, rule.major, rule.minor, access))
    return DevicePolicy(default_allow, tuple(exceptions))


def _apply(exceptions: list[DeviceException], default_allow: bool, allow: bool,
           new: DeviceException) -> None:
    for i, ex in enumerate(exceptions):
        if (ex.type, ex.major, ex.minor) != (new.type, new.major, new.minor):
            continue
        if allow == default_allow:
            left = ex.access - new.access
            if left:
                exceptions[i] = DeviceException(ex.type, ex.major, ex.minor, left)
            else:
                del exceptions[i]
        else:
            exceptions[i] = DeviceException(ex.type, ex.major, ex.minor, ex.access | new.access)
        return
    if allow != default_allow:
        exceptions.append(new)
