"""The child's side of the agent <-> workload channel: JSON lines on a file descriptor the agent reads.

Logs are plain stdout/stderr; structured events (progress, result, error) travel on their own descriptor so a
workload's prints can never be mistaken for its result.
"""
from __future__ import annotations

import json
import os


class Reporter:
    def __init__(self, fd: int | None):
        self._stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8") if fd is not None else None
        self.events: list[dict] = []

    def _emit(self, event: dict) -> None:
        self.events.append(event)
        if self._stream is not None:
            self._stream.write(json.dumps(event) + "\n")
            self._stream.flush()

    def progress(self, fraction: float, message: str, metrics: dict | None = None) -> None:
        event = {"type": "progress", "progress": max(0.0, min(1.0, float(fraction))), "message": message}
        if metrics:
            event["metrics"] = metrics
        self._emit(event)

    def result(self, result: dict, artifacts: list[str] | None = None) -> None:
        self._emit({"type": "result", "result": result, "artifacts": artifacts or []})

    def error(self, message: str, retryable: bool) -> None:
        self._emit({"type": "error", "error": message, "retryable": retryable})
