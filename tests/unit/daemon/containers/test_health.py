"""Healthcheck settings and the state step (Docker's rules), without containers."""

from __future__ import annotations

from pydeskd.daemon.containers.health import MAX_LOG, Settings, initial, record_result


def test_settings() -> None:
    assert Settings.from_config(None) is None
    assert Settings.from_config({"Test": ["NONE"]}) is None
    s = Settings.from_config({"Test": ["CMD-SHELL", "curl -f localhost"]})
    assert s is not None and s.argv == ("/bin/sh", "-c", "curl -f localhost")
    assert (s.interval, s.timeout, s.retries, s.start_interval) == (30.0, 30.0, 3, 5.0)
    s = Settings.from_config({"Test": ["CMD", "true"], "Interval": 200_000_000, "Retries": 1})
    assert s is not None and s.argv == ("true",) and s.interval == 0.2 and s.retries == 1


def step(health: dict[str, object] | None, code: int, in_start: bool = False,
         retries: int = 2) -> dict[str, object]:
    return record_result(health, exit_code=code, output="out" * 2000, start="s", end="e",
                         retries=retries, in_start_period=in_start)


def test_transitions() -> None:
    h = initial()
    assert h["Status"] == "starting"
    h = step(h, 1, in_start=True)  # failures in the start period do not count
    assert h["Status"] == "starting" and h["FailingStreak"] == 0
    h = step(h, 1)
    assert h["Status"] == "starting" and h["FailingStreak"] == 1
    h = step(h, 0)
    assert h["Status"] == "healthy" and h["FailingStreak"] == 0
    h = step(step(h, 1), -1)
    assert h["Status"] == "unhealthy" and h["FailingStreak"] == 2
    for _ in range(10):
        h = step(h, 1)
    log = h["Log"]
    assert isinstance(log, list) and len(log) == MAX_LOG
    assert len(log[-1]["Output"]) == 4096 and log[-1]["ExitCode"] == 1
