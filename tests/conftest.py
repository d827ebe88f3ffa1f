"""Test tiers by directory: tests/unit (no privileges), tests/integration (root), tests/vm (QEMU).

Each test gets the marker of its tier, so `pytest -m unit` selects a tier from anywhere.
Integration and vm tests skip cleanly, with the reason, when not run as root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TIERS = ("unit", "integration", "vm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        try:
            tier = Path(item.path).relative_to(root).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
            if tier != "unit" and os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason=f"{tier} tests need root"))
