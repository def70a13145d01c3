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
    """Invoke ``function`` every ``every`` seconds until ``stop``; missed ticks are skipped, not run back to back.

    EventBridge invokes asynchronously: a run longer than the rate overlaps the next one (the indexer hands
    its follower lease over that way), up to the function's reserved concurrency (one without it)."""
    rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{function.physical_name}-schedule"
    next_run = time.monotonic() + every
    running: list[threading.Thread] = []

    def invoke() -> None:
        try:
            function.invoke(scheduled_event(rule_arn))
        except Exception:  # noqa: BLE001 - already logged; the next tick tries again
            pass

    while not stop.wait(max(0.0, next_run - time.monotonic())):
        running = [thread for thread in running if thread.is_alive()]
        if len(running) < (function.spec.reserved_concurrency or 1):
            thread = threading.Thread(target=invoke, name=f"depu-local-tick-{function.name}", daemon=True)
            thread.start()
            running.append(thread)
        next_run += every
        if next_run < time.monotonic():
            next_run = time.monotonic() + every
