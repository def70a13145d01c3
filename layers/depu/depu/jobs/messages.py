"""Telling the user about a job: one progress message edited in place, and a summary at the end.

Edits go through the notify queue (``depu.notify``), at most one every PROGRESS_EDIT_SECONDS per job: the
throttle is a conditional write on the job, so concurrent heartbeats and progress reports cannot burst past
Telegram's one-message-per-second-per-chat limit. The words are the bot's (``depu.bot.job_text``): this
module decides when to send, that one what it says.
"""
from __future__ import annotations

import time

from pynamodb.exceptions import UpdateError

from depu import notify
from depu.bot import job_text
from depu.jobs import lifecycle
from depu.jobs.models import Job

PROGRESS_EDIT_SECONDS = 5
CANCEL_PREFIX = job_text.CANCEL_PREFIX


def cancel_button(job_id: str) -> dict[str, str]:
    """The Cancel button as a notice carries it."""
    button = job_text.cancel_button(job_id)
    return {"text": button.text, "data": button.data or ""}


def maybe_update_progress(job: Job, *, force: bool = False) -> bool:
    """Edit the job's progress message if it has one and the last edit is old enough."""
    if job.progress_message_id is None:
        return False
    now = int(time.time())
    last = int(job.progress_notified_at or 0)
    if not force and now - last < PROGRESS_EDIT_SECONDS:
        return False
    try:
        job.update(actions=[Job.progress_notified_at.set(now)], condition=Job.progress_notified_at == last)
    except UpdateError as error:
        if getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException" and not force:
            return False  # someone else just edited it
        if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise
    buttons = [[cancel_button(job.job_id)]] if job.status in lifecycle.ACTIVE else None
    notify.enqueue(
        notify.Notice(int(job.chat_id), job_text.status_text(job), buttons=buttons, edit_message_id=int(job.progress_message_id))
    )
    return True


def announce_end(job: Job) -> None:
    """Final edit of the progress message plus a new message (so the user is notified) with the summary."""
    if job.progress_message_id is not None:
        notify.enqueue(
            notify.Notice(int(job.chat_id), job_text.status_text(job), edit_message_id=int(job.progress_message_id))
        )
    notify.enqueue(notify.Notice(int(job.chat_id), job_text.summary_text(job), dedupe_key=f"job-end:{job.job_id}"))


def announce_retry(job: Job) -> None:
    """The attempt was interrupted: say so (and that it is free), and refresh the progress message."""
    notify.enqueue(
        notify.Notice(int(job.chat_id), job_text.retry_text(job), dedupe_key=f"job-retry:{job.job_id}:{int(job.attempt)}")
    )
    maybe_update_progress(job, force=True)
