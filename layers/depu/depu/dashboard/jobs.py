"""The Mini App's jobs: the session user's list, one job's log as it grows, and its outputs when it ends.

Why its own module beside the overview: the overview is one defensive payload polled every few seconds,
while a job's log is paged incrementally (a cursor per reader) and its outputs are short-lived links, each
asked for only when the user opens that job.

Ownership: every read starts from ``depu.jobs.service.user_job`` keyed by the session's user, so another
user's job id is ``JobNotFound`` exactly like an id that does not exist; nothing about it (not even that it
exists) reaches the answer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from depu.jobs import artifacts, lifecycle, logs, service
from depu.jobs.artifacts import Artifact
from depu.jobs.models import Job

MAX_LISTED = 50
DEFAULT_LISTED = 20
OUTPUT_LINK_SECONDS = 10 * 60  # the Mini App asks again when the user comes back; a leaked link dies soon
ID_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"


class JobNotFound(Exception):
    """No job of this user has that id (whether another user's or none at all)."""


@dataclass(frozen=True)
class JobLog:
    """One page of a job's log, with the job as it was read just before the page."""

    job: Job
    page: logs.LinePage
    finished: bool  # the job ended and this page reached the end of its log: stop polling


@dataclass(frozen=True)
class JobOutputs:
    job: Job
    outputs: list[Artifact]
    links_expire_at: int | None  # None when there are no links


def finished(job: Job) -> bool:
    return job.status in lifecycle.TERMINAL


def phase(job: Job) -> str | None:
    """Where a running job is: 'setup' while a job spec installs packages and fetches inputs (not billed),
    then 'running' once the user's code (or a built-in workload) runs; None when it does not run."""
    if job.status != lifecycle.RUNNING:
        return None
    return "setup" if job.workload == "job" and job.started_at is None else "running"


def user_jobs(user_id: int, limit: int = DEFAULT_LISTED) -> list[Job]:
    """The user's newest jobs, newest first."""
    wanted = max(1, min(MAX_LISTED, int(limit)))
    return [job for job in service.user_jobs(user_id, wanted) if int(job.user_id) == int(user_id)]


def owned(user_id: int, job_id: str) -> Job:
    job = service.user_job(user_id, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def job_log(user_id: int, job_id: str, cursor: str | None) -> JobLog:
    """The lines after ``cursor`` (``logs.LinePosition``; BadPosition for one this API never gave out). The
    job is read first: a job that has ended takes no more chunks (depu.jobs.work.append_logs), so a page read
    after seeing it ended holds everything there will ever be."""
    position = logs.LinePosition.parse(cursor)
    job = owned(user_id, job_id)
    stored_up_to = int(job.log_seq_max if job.log_seq_max is not None else -1)
    page = logs.read_lines(job.job_id, stored_up_to, position)
    return JobLog(job, page, finished=finished(job) and not page.more)


def job_outputs(user_id: int, job_id: str, *, now: float | None = None) -> JobOutputs:
    """The files the job completed with, as download links valid for OUTPUT_LINK_SECONDS (a running job has
    none yet: they are recorded when it completes)."""
    job = owned(user_id, job_id)
    listed = artifacts.artifacts(job, link_seconds=OUTPUT_LINK_SECONDS) if finished(job) else []
    issued = time.time() if now is None else now
    expires = int(issued) + OUTPUT_LINK_SECONDS if any(item.url for item in listed) else None
    return JobOutputs(job, listed, expires)
