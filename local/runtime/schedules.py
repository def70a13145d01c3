"""EventBridge ``Schedule`` events: a timer per schedule, invoking the function with a scheduled event."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from local.runtime.environments import LocalFunction
from local.template import ACCOUNT_ID, REGION


def scheduled_event(rule_arn: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def run_schedule(function: LocalFunction, every: float, stop: threading.Event) -> None:
    """Invoke ``function`` every ``every`` seconds until ``stop``; missed ticks are skipped, not run back to back."""
    rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{function.physical_name}-schedule"
    next_run = time.monotonic() + every
    while not stop.wait(max(0.0, next_run - time.monotonic())):
        try:
            function.invoke(scheduled_event(rule_arn))
        except Exception:  # noqa: BLE001 - already logged; the next tick tries again
            pass
        next_run += every
        if next_run < time.monotonic():
            next_run = time.monotonic() + every
