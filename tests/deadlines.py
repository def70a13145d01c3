"""How long the end-to-end tests wait for an event, in one place.

Tests wait on events (a job's state, a log line, a process gone), never for a fixed time, and each wait has a
deadline: a nominal number of seconds times ``DEPU_TEST_TIME_SCALE`` (default 1). On a slower or busier machine
than a 2-core developer box, set it to 2 or 3 and every deadline grows together; nothing else changes.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
TIME_SCALE = float(os.environ.get("DEPU_TEST_TIME_SCALE", "1") or 1)


def scaled(seconds: float) -> float:
    """A nominal deadline on this machine."""
    return seconds * TIME_SCALE


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition", interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or the scaled ``timeout`` passes."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {limit:g} s waiting for {what}")

