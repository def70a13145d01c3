"""Job logs go up in numbered batches about once a second; a batch is retried with the same ``seq`` (the API
treats seq as idempotent) so a flaky network neither loses nor duplicates lines. Progress is throttled to the
same cadence, keeping only the newest value."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .api import AgentRejected, ApiClient, ApiUnavailable

log = logging.getLogger(__name__)
MAX_LINES_PER_BATCH = 500
GONE_STATUSES = frozenset({404, 409, 410})
OVER_BUDGET = 413  # the job's log budget is used up: later lines stay local (the tail still shows them)


class JobChannel:
    """Everything a running job sends besides its final report: log batches and progress."""

    def __init__(
        self,
        api: ApiClient,
        job_id: str,
        interval_s: float,
        batch_attempts: int,
        on_gone: Callable[[], None],
        on_cancelled: Callable[[], None] | None = None,
    ):
        self.api = api
        self.job_id = job_id
        self.interval_s = interval_s
        self.batch_attempts = batch_attempts
        self.on_gone = on_gone
        self.on_cancelled = on_cancelled or on_gone
        self._lines: list[str] = []
        self._progress: dict | None = None
        self.phase: str | None = None  # a job spec's phase, once it has one (set_progress)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"logs-{job_id[:8]}")
        self.seq = 0
        self.sent_lines = 0
        self.dropped_lines = 0
        self.over_budget = False
        self.tail: list[str] = []

    def start(self) -> "JobChannel":
        self._thread.start()
        return self

    def add_line(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            self.tail = (self.tail + [line])[-50:]

    def set_progress(self, progress: float, message: str, metrics: dict | None = None,
                     phase: str | None = None) -> None:
        """The next progress report (only the latest is sent). A job spec's ``phase`` ('setup', then 'running'
        when its code starts, which starts its billing) sticks to every later report, so coalescing reports
        never drops the start."""
        body = {"progress": progress, "message": message[:500]}
        if metrics:
            body["metrics"] = metrics
        if phase:
            self.phase = phase
        if self.phase:
            body["phase"] = self.phase
        with self._lock:
            self._progress = body

    def close(self) -> None:
        """Send what is left, then stop (bounded by the client's retries)."""
        self._closing.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            closing = self._closing.wait(self.interval_s)
            try:
                self._send_progress()
                while self._send_batch():
                    if not closing:
                        break
            except AgentRejected:
                log.error("token rejected while sending logs for job %s", self.job_id)
                return
            if closing:
                return

    def _send_progress(self) -> None:
        with self._lock:
            body, self._progress = self._progress, None
        if body is None:
            return
        try:
            status, answer = self.api.post(f"/agent/jobs/{self.job_id}/progress", body, attempts=2)
        except ApiUnavailable:
            with self._lock:  # keep it for the next round unless a newer value arrived meanwhile
                if self._progress is None:
                    self._progress = body
            return
        if status in GONE_STATUSES:
            self._gone(answer)

    def _gone(self, answer: dict | None) -> None:
        """The API no longer takes reports for this job: its user cancelled it (409 with that state; the
        heartbeat would say so too), or it is not ours any more."""
        if isinstance(answer, dict) and answer.get("state") == "cancelled":
            self.on_cancelled()
        else:
            self.on_gone()

    def _send_batch(self) -> bool:
        """Send one batch; True if one was sent (so the caller may send more)."""
        with self._lock:
            lines = self._lines[:MAX_LINES_PER_BATCH]
            if self.over_budget:
                self.dropped_lines += len(self._lines)
                self._lines.clear()
                return False
        if not lines:
            return False
        body = {"seq": self.seq, "lines": lines}
        answer = None
        try:
            status, answer = self.api.post(f"/agent/jobs/{self.job_id}/logs", body, attempts=self.batch_attempts)
        except ApiUnavailable:
            log.warning("log batch %d of job %s dropped after %d attempts", self.seq, self.job_id,
                        self.batch_attempts)
            status = None
            self.dropped_lines += len(lines)
        with self._lock:
            del self._lines[: len(lines)]
        self.seq += 1
        if status is not None and status < 300:
            self.sent_lines += len(lines)
        if status in GONE_STATUSES:
            self._gone(answer)
        if status == OVER_BUDGET:
            log.warning("job %s: the API's log budget is used up; further lines are not shipped", self.job_id)
            self.over_budget = True
        return True
