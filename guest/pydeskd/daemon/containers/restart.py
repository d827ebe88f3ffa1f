"""Restart policies: whether an exited container starts again, and after what delay.

Docker's rules (moby's restartmanager): ``no`` never; ``always`` and ``unless-stopped`` after
every exit; ``on-failure[:N]`` after a non-zero exit, at most N times (0: no limit). ``docker
stop`` cancels the manager (no restart whatever the policy); ``docker kill`` marks the container
manually stopped, which only ``unless-stopped`` honours (as moby's ShouldRestart). The delay
starts at 100 ms and doubles after each restart, up to a minute, and goes back to 100 ms once
a run lasted 10 s or more.

Pure: time is passed in, so decisions are unit-tested with a fake clock. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydeskd.containerd.errors import InvalidArgument

BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
RESET_AFTER = 10.0


class Policy(StrEnum):
    NO = "no"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"
    ON_FAILURE = "on-failure"


@dataclass(frozen=True)
class RestartPolicy:
    name: Policy = Policy.NO
    maximum_retry_count: int = 0

    @classmethod
    def from_api(cls, obj: Mapping[str, Any] | None) -> RestartPolicy:
        """HostConfig.RestartPolicy (``{"Name": ..., "MaximumRetryCount": N}``); "" is ``no``.
        Raises InvalidArgument with Docker's messages."""
        obj = obj or {}
        name = obj.get("Name") or "no"
        count = int(obj.get("MaximumRetryCount") or 0)
        try:
            policy = Policy(name)
        except ValueError:
            raise InvalidArgument(f"invalid restart policy: unknown policy '{name}'; use one "
                                  f"of 'no', 'always', 'on-failure', or 'unless-stopped'"
                                  ) from None
        if count < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count cannot be "
                                  "negative")
        if count and policy is not Policy.ON_FAILURE:
            raise InvalidArgument("invalid restart policy: maximum retry count can only be "
                                  "used with 'on-failure'")
        return cls(policy, count)

    def restarts_at_daemon_start(self, manually_stopped: bool, exit_code: int) -> bool:
        """Docker at daemon start: ``always`` containers come back even after a stop,
        ``unless-stopped`` unless stopped, ``on-failure`` after a failure not stopped."""
        if self.name is Policy.ALWAYS:
            return True
        if manually_stopped:
            return False
        return self.name is Policy.UNLESS_STOPPED or (
            self.name is Policy.ON_FAILURE and exit_code != 0)


class RestartManager:
    """The backoff of one container (kept in memory; a daemon restart starts it afresh)."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.delay = 0.0
        self.cancelled = False

    def should_restart(self, exit_code: int, manually_stopped: bool, restart_count: int,
                       ran_for: float) -> float | None:
        """The delay before the restart, or None for no restart. Updates the backoff."""
        policy = self.policy
        if self.cancelled or policy.name is Policy.NO:
            return None
        if policy.name is Policy.UNLESS_STOPPED and manually_stopped:
            return None
        if policy.name is Policy.ON_FAILURE:
            if exit_code == 0:
                return None
            if policy.maximum_retry_count and restart_count >= policy.maximum_retry_count:
                return None
        if ran_for >= RESET_AFTER or self.delay == 0.0:
            self.delay = BACKOFF_START
        else:
            self.delay = min(self.delay * 2, BACKOFF_MAX)
        return self.delay

    def cancel(self) -> None:
        """An explicit stop or a removal: a pending restart must not happen."""
        self.cancelled = True
