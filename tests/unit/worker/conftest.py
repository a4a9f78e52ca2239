"""Fixtures of the worker tests."""

from __future__ import annotations

import pytest

from worker.activity import ActivityRunner
from worker.entries import Registry


@pytest.fixture(scope="module")
def runner(reg: Registry) -> ActivityRunner:
    """Runs a test module's function entries (its `reg` fixture) as activities: no heartbeats recorded."""
    return ActivityRunner(reg, lambda ctx, details: False)
