"""The user's side of jobs: submit (hold the most it can cost, store, enqueue), cancel, list; and what happens
after a job moves (settle and tell the user at the end, re-enqueue on a retry).
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import boto3

from depu import credits
from depu.agents.catalogue import egress_refusal, price_per_hour
from depu.config import get_settings
from depu.errors import UserError
from depu.jobs import lifecycle, messages, metering, storage, workloads
from depu.jobs.spec import WORKLOAD as SPEC_WORKLOAD
from depu.jobs.spec import MAX_INPUT_FILES, JobSpec, clean_inputs, wants_egress
from depu.jobs.uploads import UploadedInput
from depu.jobs.leases import MAX_QUEUE_SECONDS
from depu.jobs.models import Job

log = logging.getLogger(__name__)

JOBS_LISTED = 10


def new_job_id() -> str:
    return "j" + uuid.uuid4().hex[:12]


def enqueue(job_id: str, delay_seconds: int = 0) -> None:
    """Put the job on the matcher's queue (SQS keeps it until an agent fits)."""
    boto3.client("sqs").send_message(
        QueueUrl=get_settings().job_queue_url,
        MessageBody=json.dumps({"job_id": job_id}),
        DelaySeconds=max(0, min(int(delay_seconds), 900)),
    )


def submit(
    user_id: int,
    chat_id: int,
    *,
    gpu_class: str,
    workload: str,
    params: dict[str, Any],
    time_limit_s: int,
    script: bytes | None = None,
    job_id: str | None = None,
    inputs: list[tuple[str, bytes]] | None = None,
    uploaded: list[UploadedInput] | None = None,
) -> Job:
    """Validate, hold the maximum cost, save the job queued and enqueue it. Raises ``UserError`` for
    anything the user can fix (including too few credits); on any failure after the hold, the hold is
    released, so nothing is lost.

    The ``job`` workload takes a job spec (``depu.jobs.spec``) as ``params``: a command or a script file
    (``file_name``/``file_size`` with ``script``), requirements, environment and ``gpu_count``, and
    ``inputs`` as (name, bytes) files the agent places in the job's inputs/ before its code starts, and
    ``uploaded`` files already in the bucket (``depu.jobs.uploads.confirm``: checked, pinned to their ETag)."""
    gpu_count = 1
    if (inputs or uploaded) and workload != SPEC_WORKLOAD:
        raise UserError("Only your own jobs take input files.")
    files = clean_inputs(inputs)
    uploaded = list(uploaded or [])
    names = [name for name, _body in files] + [item.name for item in uploaded]
    if len(set(names)) != len(names):
        raise UserError("Two input files have the same name.")
    if len(names) > MAX_INPUT_FILES:
        raise UserError(f"A job takes at most {MAX_INPUT_FILES} input files.")
    if workload == SPEC_WORKLOAD:
        fields = {key: value for key, value in (params or {}).items() if key not in ("file_name", "file_size")}
        fields.setdefault("time_limit_s", time_limit_s)
        job_spec = JobSpec.parse(fields, script_name=(params or {}).get("file_name") if script is not None else None,
                                 script_size=len(script) if script is not None else None)
        clean, limit, gpu_count = job_spec.params, job_spec.time_limit_s, job_spec.gpu_count
        refusal = egress_refusal(gpu_class, clean.get("egress_hosts")) if wants_egress(clean) else None
        if refusal:
            raise UserError(refusal)
    else:
        clean = workloads.validate(workload, params)
        limit = workloads.validate_time_limit(time_limit_s)
    if workload == "script" or (workload == SPEC_WORKLOAD and script is not None):
        if not script:
            raise UserError("The script file is empty.")
        if len(script) > workloads.MAX_SCRIPT_BYTES:
            raise UserError(f"The script must be at most {workloads.MAX_SCRIPT_BYTES // 1024} KiB.")
    price = price_per_hour(gpu_class) * gpu_count  # each GPU of the job at the class price
    most = metering.max_cost(price, limit)
    job_id = job_id or new_job_id()
    hold_id = f"job-{job_id}"
    try:
        credits.hold(user_id, most, hold_id)
    except credits.InsufficientCredits as error:
        raise UserError(
            f"This job can cost up to <b>{most}</b> credits and you have <b>{error.available or 0}</b> available. "
            "Choose a shorter time limit or a cheaper class."
        ) from error
    except credits.UnknownAccount as error:
        raise UserError("Send /start first to open your profile.") from error
    saved = False
    try:
        job = Job(
            job_id,
            user_id=user_id,
            chat_id=chat_id,
            created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            status=lifecycle.QUEUED,
            lease_expires_at=int(time.time()) + MAX_QUEUE_SECONDS,
            gpu_class=gpu_class,
            workload=workload,
            params=clean,
            time_limit_s=limit,
            gpu_count=gpu_count,
            price_per_hour=price,
            max_cost=most,
            hold_id=hold_id,
            attempt=0,
            failed_agents=[],
        )
        if script is not None:
            job.script_key = storage.script_key(job_id)
            storage.put(job.script_key, script, "text/x-python")
        if files or uploaded:
            keys = [storage.input_key(job_id, name) for name, _body in files]
            etags = [storage.put(key, body) for (_name, body), key in zip(files, keys)]
            job.input_keys = keys + [item.key for item in uploaded]
            job.input_sizes = [len(body) for _name, body in files] + [item.size for item in uploaded]
            job.input_etags = etags + [item.etag for item in uploaded]
        job.save(condition=Job.job_id.does_not_exist())
        saved = True
        enqueue(job_id)
    except Exception:
        _abandon(job if saved else None, user_id, hold_id)
        raise
    if uploaded:
        _free_upload_room(user_id, [item.key for item in uploaded])
    return job


def _free_upload_room(user_id: int, keys: list[str]) -> None:
    """The uploads a saved job uses stop counting against the user's upload room (``depu.jobs.upload_room``).
    The job stands either way: a failed release only leaves the room taken until the reservations expire."""
    from depu.jobs import upload_room

    try:
        upload_room.release(user_id, keys)
    except Exception:  # noqa: BLE001 - the job is queued; the reservation expires by itself
        log.warning("upload room not released", extra={"user_id": user_id, "files": len(keys)})


def _abandon(job: Job | None, user_id: int, hold_id: str) -> None:
    """Undo a half-made submit: no saved job left queued without its queue message, no credits left held."""
    if job is not None:
        try:
            lifecycle.cancel(job, user_id)
        except lifecycle.Conflict:
            pass
    credits.release(user_id, hold_id)


def set_progress_message(job_id: str, message_id: int | None) -> None:
    if message_id is not None:
        Job(job_id).update(actions=[Job.progress_message_id.set(int(message_id))], condition=Job.job_id.exists())


def user_job(user_id: int, job_id: str) -> Job | None:
    """The job if it is this user's; None otherwise (another user's job is indistinguishable from none)."""
    if not isinstance(job_id, str) or not job_id or len(job_id) > 40:
        return None
    try:
        job = Job.get(job_id, consistent_read=True)
    except Job.DoesNotExist:
        return None
    return job if int(job.user_id) == int(user_id) else None


def user_jobs(user_id: int, limit: int = JOBS_LISTED) -> list[Job]:
    return list(Job.by_user.query(int(user_id), scan_index_forward=False, limit=limit))


def gpu_seconds_by_class(user_id: int) -> dict[str, int]:
    """The GPU seconds billed to the user so far, by GPU class (one query of the user's jobs)."""
    usage: dict[str, int] = {}
    for job in Job.by_user.query(int(user_id)):
        if job.billed_seconds:
            usage[job.gpu_class] = usage.get(job.gpu_class, 0) + int(job.billed_seconds)
    return usage


@dataclass(frozen=True)
class AgentEarnings:
    """What one of a provider's machines has done: jobs finished and credits earned."""

    jobs_done: int = 0
    earned: int = 0


def earnings_by_agent(provider_id: int) -> dict[str, AgentEarnings]:
    """Each of the provider's machines' finished jobs and earnings, from one query of the provider's jobs
    (the ``by_provider`` index), not one query per machine. Machines with nothing finished are absent."""
    totals: dict[str, AgentEarnings] = {}
    for job in Job.by_provider.query(int(provider_id)):
        if job.status not in lifecycle.TERMINAL or not job.agent_id:
            continue
        seen = totals.get(job.agent_id, AgentEarnings())
        totals[job.agent_id] = AgentEarnings(seen.jobs_done + 1, seen.earned + int(job.provider_earned or 0))
    return totals


def cancel(user_id: int, job_id: str) -> Job:
    job = user_job(user_id, job_id)
    if job is None:
        raise UserError("No such job of yours. /jobs lists them.")
    try:
        lifecycle.cancel(job, user_id)
    except lifecycle.Conflict as error:
        raise UserError(f"Job <code>{job.job_id}</code> is already {error.current}.") from error
    finish(job)
    return job


def finish(job: Job) -> None:
    """After a terminal move: settle the credits exactly once, then tell the user."""
    metering.settle(job)
    messages.announce_end(job)


def requeued(job: Job, *, announce: bool) -> None:
    """After a move back to the queue: give the matcher the job again; tell the user if it was a retry."""
    enqueue(job.job_id)
    if announce:
        messages.announce_retry(job)
    else:
        messages.maybe_update_progress(job, force=True)


def after_move(job: Job, *, retry: bool = False) -> None:
    """Route the side effects of whatever state ``job`` just moved to."""
    if job.status in lifecycle.TERMINAL:
        finish(job)
    elif job.status == lifecycle.QUEUED:
        requeued(job, announce=retry)
    else:
        messages.maybe_update_progress(job, force=True)
