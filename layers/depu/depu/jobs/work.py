"""The agent's side of jobs: heartbeat, claim, progress, logs, artifacts, complete, fail, release.

An agent sees only its own jobs: any job that is not (or no longer) in its hands is reported as not found,
exactly like a job that does not exist. Calls that move a job go through ``lifecycle`` and answer
``Conflict`` (409, with the current state) when the move is not legal any more.

Every argument arrives typed and shape-checked by the agent API's contract (depu.contracts.agent_api); the
rules here are the ones that need the job: its state, its owner, its budgets.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import UpdateError
from pynamodb.expressions.condition import size as size_of

from depu.agents import challenges, egress_fit, registry, setup_failures
from depu.agents.registry import Agent
from depu.contracts.agent_api import GpuMetrics, JobOffer
from depu.jobs import lifecycle, messages, service, storage
from depu.jobs.leases import (
    CLAIM_POLL_INTERVAL_SECONDS,
    CLAIM_WAIT_SECONDS,
    MAX_QUEUE_SECONDS,
    SETUP_LIMIT_SECONDS,
    TIME_LIMIT_GRACE_SECONDS,
)
from depu.jobs.models import Job

MAX_LOG_LINE_CHARS = 2000
LOG_TAIL_KEPT = 50
MAX_RESULT_BYTES = 32 * 1024
MAX_MESSAGE_CHARS = 500
STEAL_AFTER_SECONDS = 5

# Provider budgets: what one job may make us store, whatever its agent sends.
LOG_CHUNKS_PER_SECOND = 1  # the agent ships one chunk a second (agent/depu_agent/logship.py)
LOG_CHUNK_SLACK = 120
MAX_LOG_BYTES_PER_JOB = 64 * 1024 * 1024
MAX_ARTIFACTS_PER_JOB = 20
MAX_ARTIFACT_BYTES_PER_JOB = 2 * 1024 * 1024 * 1024


class NotFound(Exception):
    """Not this agent's job (or no such job)."""


class BadRequest(ValueError):
    """The request is malformed; the message says what is wrong."""


class OverBudget(ValueError):
    """The job's log or artifact budget does not allow this (413); the message says which."""


@dataclass(frozen=True)
class Offer:
    """What a successful claim hands the agent."""

    job: Job
    script_url: str | None
    input_urls: list[dict[str, Any]] | None = None

    def as_contract(self) -> JobOffer:
        return JobOffer(
            job_id=self.job.job_id,
            workload=self.job.workload,
            params=self.job.params or {},
            time_limit_s=int(self.job.time_limit_s),
            gpu_index=int(self.job.gpu_index) if self.job.gpu_index is not None else 0,
            attempt=int(self.job.attempt),
            gpu_class=self.job.gpu_class,
            script_url=self.script_url or None,
            gpu_indices=[int(i) for i in (self.job.gpu_indices or [self.job.gpu_index or 0])],
            inputs=self.input_urls or None,
        )


def input_links(job: Job) -> list[dict[str, Any]]:
    """The job's input files as the agent fetches them: one presigned GET per file, of that key only, pinned to
    the version checked at submit (a signed ``If-Match``), with the size the agent holds the download to."""
    sizes, etags = list(job.input_sizes or []), list(job.input_etags or [])
    links: list[dict[str, Any]] = []
    for index, key in enumerate(job.input_keys or []):
        etag = etags[index] if index < len(etags) else None
        link: dict[str, Any] = {"name": key.rsplit("/", 1)[-1],
                                "url": storage.download_url(key, seconds=storage.SCRIPT_URL_SECONDS, if_match=etag)}
        if etag:
            link["if_match"] = etag
        if index < len(sizes):
            link["size"] = int(sizes[index])
        links.append(link)
    return links


def own_job(agent_id: str, job_id: str) -> Job:
    """The job if this agent holds it (or held it when it ended); NotFound otherwise."""
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 40:
        raise NotFound(job_id)
    try:
        job = Job.get(job_id, consistent_read=True)
    except Job.DoesNotExist as error:
        raise NotFound(job_id) from error
    if job.agent_id != agent_id:
        raise NotFound(job_id)
    return job


# ---------------------------------------------------------------- heartbeat


def heartbeat(agent: Agent, metrics: Sequence[GpuMetrics], running_jobs: Sequence[str], free_gpus: Sequence[int],
              fault: str | None = None, env_hashes: Sequence[str] | None = None,
              egress: str | None = None, image_digests: Sequence[str] | None = None,
              container_registries: Sequence[str] | None = None, egress_hosts: Any = None) -> list[str]:
    """Renew the leases of the listed jobs this agent runs; returns the ids it must stop (cancelled by the
    user, taken back after a lost lease, over their time limit or setup bound, or never its own). ``fault`` is
    the agent's reason it cannot take work (None when it can); ``env_hashes`` the job environments it holds
    built (the matcher prefers it for those); ``egress`` its provider's egress policy ('allowed' or 'none';
    None leaves the stored one); ``image_digests`` the container images it holds (preferred the same way as
    environments) and ``container_registries`` those it runs images from (only such agents get image jobs);
    ``egress_hosts`` the provider's own host list, as sent (registry.clean_egress_hosts judges it)."""
    running_ids = list(running_jobs)
    metrics_list = [readings for readings in (item.readings() for item in metrics) if readings]
    registry.record_heartbeat(agent.agent_id, metrics_list, list(free_gpus), fault=registry.clean_fault(fault),
                              env_hashes=registry.clean_env_hashes(list(env_hashes) if env_hashes is not None else None),
                              egress=egress,
                              image_digests=registry.clean_image_digests(
                                  list(image_digests) if image_digests is not None else None),
                              container_registries=registry.clean_container_registries(
                                  list(container_registries) if container_registries is not None else None),
                              egress_hosts=egress_hosts)
    challenges.lapse_if_ignored(agent)
    by_gpu = {item["gpu_index"]: item for item in metrics_list if "gpu_index" in item}
    cancel: list[str] = []
    now = time.time()
    for job_id in running_ids:
        try:
            job = own_job(agent.agent_id, job_id)
        except NotFound:
            cancel.append(job_id)
            continue
        if job.status != lifecycle.RUNNING:
            cancel.append(job_id)
            continue
        if job.started_at is not None and now > float(job.started_at) + int(job.time_limit_s) + TIME_LIMIT_GRACE_SECONDS:
            try:
                lifecycle.overran(job, agent.agent_id)
                service.after_move(job)
            except lifecycle.Conflict:
                pass
            cancel.append(job_id)
            continue
        if job.started_at is None and job.setup_started_at is not None \
                and now > float(job.setup_started_at) + SETUP_LIMIT_SECONDS + TIME_LIMIT_GRACE_SECONDS:
            try:  # unbilled: its code never started
                lifecycle.fail(job, agent.agent_id, f"setup took longer than {SETUP_LIMIT_SECONDS // 60} minutes "
                               "(installing packages, fetching inputs); nothing was billed", False)
                service.after_move(job)
            except lifecycle.Conflict:
                pass
            cancel.append(job_id)
            continue
        gpu_metrics = by_gpu.get(int(job.gpu_index)) if job.gpu_index is not None else None
        also = [Job.metrics.set(gpu_metrics)] if gpu_metrics is not None else []
        if not lifecycle.renew_lease(job, agent.agent_id, also):
            cancel.append(job_id)
            continue
        if gpu_metrics is not None:
            messages.maybe_update_progress(job)
    return cancel


# ---------------------------------------------------------------- claim


def _used_gpus(agent_id: str) -> set[int]:
    used: set[int] = set()
    for job in Job.by_agent.query(agent_id, Job.status == lifecycle.RUNNING):
        used.update(int(index) for index in (job.gpu_indices or ([job.gpu_index] if job.gpu_index is not None else [])))
    return used


def _steal(agent: Agent, now: int) -> Job | None:
    """Take a job that has waited in the queue a few seconds for this agent's class (the matcher found
    nobody, and SQS is backing off): an idle, fitting agent should not wait for the redelivery."""
    if not agent.verified or challenges.is_due(agent, now):
        return None
    newest = now + MAX_QUEUE_SECONDS - STEAL_AFTER_SECONDS
    for job in Job.by_status.query(lifecycle.QUEUED, Job.lease_expires_at.between(now, newest), limit=25):
        if job.gpu_class != agent.gpu_class or agent.agent_id in (job.failed_agents or []):
            continue
        if not egress_fit.takes(agent, job.params):
            continue
        if not setup_failures.may_offer_image(agent, job, now):
            continue
        try:
            return lifecycle.assign(job, agent)
        except lifecycle.AgentFull:
            return None
        except lifecycle.Conflict:
            continue
    return None


def _claim_once(agent: Agent, free: list[int]) -> Offer | None:
    used = _used_gpus(agent.agent_id)
    choices = [index for index in free if index not in used]
    if not choices:
        return None
    offered = list(Job.by_agent.query(agent.agent_id, Job.status == lifecycle.ASSIGNED, consistent_read=False))
    if not offered:
        stolen = _steal(agent, int(time.time()))
        offered = [stolen] if stolen else []
    for job in offered:
        slots = lifecycle.slots_of(job)
        if slots > len(choices):
            continue  # its slots are not all free yet (a job there is still ending): offered again next poll
        try:
            lifecycle.claim(job, agent.agent_id, choices[0], choices[:slots])
        except lifecycle.Conflict:
            continue
        script_url = storage.download_url(job.script_key, seconds=storage.SCRIPT_URL_SECONDS) if job.script_key else None
        inputs = input_links(job)
        messages.maybe_update_progress(job, force=True)
        return Offer(job, script_url, inputs or None)
    return None


def claim(agent: Agent, free_gpus: Sequence[int], wait_seconds: float, *, sleep=time.sleep) -> Offer | None:
    """Long poll: the next job assigned to this agent for one of its free GPUs, within ``wait_seconds`` (at
    most CLAIM_WAIT_SECONDS are used)."""
    free = list(free_gpus)
    wait = min(float(wait_seconds), CLAIM_WAIT_SECONDS)
    registry.record_heartbeat(agent.agent_id, agent.metrics or [], free)
    if agent.fault:  # it said it cannot run jobs: offer it none, even if it asks
        return None
    deadline = time.monotonic() + wait
    while True:
        offer = _claim_once(agent, free)
        if offer is not None or time.monotonic() + CLAIM_POLL_INTERVAL_SECONDS > deadline:
            return offer
        sleep(CLAIM_POLL_INTERVAL_SECONDS)


# ---------------------------------------------------------------- reports


def _running(agent_id: str, job_id: str, wanted: str) -> Job:
    job = own_job(agent_id, job_id)
    if job.status != lifecycle.RUNNING:
        raise lifecycle.Conflict(job.job_id, job.status, wanted)
    return job


PHASES = ("setup", "running")


def progress(agent: Agent, job_id: str, fraction: float, message: str | None,
             metrics: GpuMetrics | None = None, phase: str | None = None) -> Job:
    """Record how far a running job is (0..1) and the agent's one-line note. A job spec reports ``phase``
    'setup' while it installs and fetches, then 'running' once its code starts: billing starts at that moment
    (lifecycle.code_started)."""
    job = _running(agent.agent_id, job_id, lifecycle.RUNNING)
    if phase is not None and phase not in PHASES:
        raise BadRequest(f"phase must be one of {', '.join(PHASES)}")
    if phase == "running" and job.started_at is None:
        lifecycle.code_started(job, agent.agent_id)
    actions = [Job.progress.set(float(fraction)), Job.message.set((message or "")[:MAX_MESSAGE_CHARS] or None)]
    if metrics is not None:
        actions.append(Job.metrics.set(metrics.readings()))
    try:
        job.update(actions=actions, condition=(Job.status == lifecycle.RUNNING) & (Job.agent_id == agent.agent_id))
    except UpdateError as error:
        job.refresh(consistent_read=True)
        raise lifecycle.Conflict(job.job_id, job.status, lifecycle.RUNNING) from error
    messages.maybe_update_progress(job)
    return job


def log_chunk_budget(job: Job) -> int:
    """How many log chunks a job may store: one a second over its time limit and the grace after it, plus
    slack for retried and final batches. seq counts from 0, so seq must stay below this."""
    return (int(job.time_limit_s) + TIME_LIMIT_GRACE_SECONDS) * LOG_CHUNKS_PER_SECOND + LOG_CHUNK_SLACK


def append_logs(agent: Agent, job_id: str, seq: int, lines: Sequence[str]) -> bool:
    """Store one numbered chunk of a job this agent is running; True if new, False for a repeat (retries are
    safe, and a repeat writes nothing). The full log goes to S3 (one object per chunk, within the job's chunk
    and byte budgets, OverBudget beyond them); the job keeps the last LOG_TAIL_KEPT lines for the chat.
    A job that ended takes no more chunks (Conflict)."""
    job = _running(agent.agent_id, job_id, lifecycle.RUNNING)
    budget = log_chunk_budget(job)
    if seq >= budget:
        raise OverBudget(f"this job's log budget is {budget} chunks (seq 0..{budget - 1})")
    if seq <= int(job.log_seq_max if job.log_seq_max is not None else -1):
        return False  # stored already (or older than what is stored): nothing is written twice
    clean = [line[:MAX_LOG_LINE_CHARS] for line in lines]
    body = "\n".join(clean).encode()
    used = int(job.log_bytes or 0)
    if used + len(body) > MAX_LOG_BYTES_PER_JOB:
        raise OverBudget(f"this job's log budget of {MAX_LOG_BYTES_PER_JOB // (1024 * 1024)} MiB is used up")
    storage.put(storage.log_key(job.job_id, seq), body, "text/plain; charset=utf-8")
    tail = ((job.logs_tail or []) + clean)[-LOG_TAIL_KEPT:]
    try:
        job.update(
            actions=[Job.logs_tail.set(tail), Job.log_seq_max.set(seq), Job.log_bytes.add(len(body))],
            condition=((Job.log_seq_max < seq) | Job.log_seq_max.does_not_exist())
            & (Job.status == lifecycle.RUNNING) & (Job.agent_id == agent.agent_id)
            & (Job.log_bytes.does_not_exist() | (Job.log_bytes <= MAX_LOG_BYTES_PER_JOB - len(body))),
        )
    except UpdateError:
        return False  # a concurrent retry of this or a later chunk got there first (or the job just ended)
    messages.maybe_update_progress(job)  # live logs in the chat, at most one edit every few seconds
    return True


def artifact_upload(agent: Agent, job_id: str, name: str, size: int) -> dict[str, Any]:
    """A write-once upload link for one output file of a job this agent is running. Each job may name at
    most MAX_ARTIFACTS_PER_JOB files and be signed for at most MAX_ARTIFACT_BYTES_PER_JOB bytes in all (a
    repeated request for a name is charged its bytes again); the budget is taken in the same conditional
    write that checks the job still runs, so no link is handed out for an ended job."""
    job = _running(agent.agent_id, job_id, lifecycle.RUNNING)
    if not name.strip():
        raise BadRequest("name is required")
    safe = storage.safe_name(name)
    names = set(job.artifact_names or ())
    if safe not in names and len(names) >= MAX_ARTIFACTS_PER_JOB:
        raise OverBudget(f"a job may upload at most {MAX_ARTIFACTS_PER_JOB} files")
    if int(job.artifact_bytes or 0) + size > MAX_ARTIFACT_BYTES_PER_JOB:
        raise OverBudget(f"a job may upload at most {MAX_ARTIFACT_BYTES_PER_JOB // (1024 ** 3)} GiB of files")
    condition = (Job.status == lifecycle.RUNNING) & (Job.agent_id == agent.agent_id) & (
        Job.artifact_bytes.does_not_exist() | (Job.artifact_bytes <= MAX_ARTIFACT_BYTES_PER_JOB - size))
    if safe not in names:
        condition &= Job.artifact_names.does_not_exist() | (size_of(Job.artifact_names) < MAX_ARTIFACTS_PER_JOB)
    try:
        job.update(actions=[Job.artifact_names.add({safe}), Job.artifact_bytes.add(size)], condition=condition)
    except UpdateError as error:
        job.refresh(consistent_read=True)
        if job.status != lifecycle.RUNNING or job.agent_id != agent.agent_id:
            raise lifecycle.Conflict(job.job_id, job.status, lifecycle.RUNNING) from error
        raise OverBudget("this job's artifact budget is used up") from error
    key = storage.artifact_prefix(job.job_id) + safe
    return {"upload_url": storage.upload_url(key, size), "key": key, "upload_headers": dict(storage.WRITE_ONCE_HEADERS),
            "expires_in": storage.UPLOAD_URL_SECONDS}


def complete(agent: Agent, job_id: str, result: Mapping[str, Any], artifacts: Sequence[str]) -> Job:
    """Finish the job. A retry after success (the agent did not see our answer) settles again, which the
    ledger makes a no-op, and answers the same: the user is charged once. Only artifacts that were uploaded
    are kept, each with its ETag: a later write to its key (which S3 refuses anyway: links are write-once)
    would not match, and the user is not offered the changed file (depu.jobs.messages)."""
    job = own_job(agent.agent_id, job_id)
    if job.status == lifecycle.SUCCEEDED:
        if not job.settled:
            service.finish(job)
        return job
    if len(json.dumps(result, default=str)) > MAX_RESULT_BYTES:
        raise BadRequest(f"result must be a JSON object under {MAX_RESULT_BYTES // 1024} KiB")
    prefix = storage.artifact_prefix(job.job_id)
    keys = list(artifacts)
    if any(not key.startswith(prefix) for key in keys):
        raise BadRequest(f"artifact keys must start with {prefix}")
    if job.status != lifecycle.RUNNING:
        raise lifecycle.Conflict(job.job_id, job.status, lifecycle.SUCCEEDED)
    kept, etags = [], []
    for key in dict.fromkeys(keys):  # each key once, in the agent's order
        found = storage.head(key) if len(kept) < MAX_ARTIFACTS_PER_JOB else None
        if found is not None:
            kept.append(key)
            etags.append(found[1])
    lifecycle.complete(job, agent.agent_id, dict(result), kept, etags)
    registry.Agent(agent.agent_id).update(actions=[Agent.jobs_done.add(1)])
    setup_failures.job_succeeded(job, agent.agent_id)  # the setups that failed elsewhere were not the job's fault
    service.finish(job)
    return job


def fail(agent: Agent, job_id: str, error: str | None, retryable: bool) -> Job:
    job = own_job(agent.agent_id, job_id)
    if job.status == lifecycle.FAILED:
        return job
    reason = error.strip() if error else ""
    lifecycle.fail(job, agent.agent_id, (reason or "the provider's agent gave no reason")[:2000], bool(retryable))
    service.after_move(job, retry=True)
    return job


def release(agent: Agent, job_ids: Sequence[str]) -> list[str]:
    """Graceful shutdown: hand back assigned or running jobs; returns the ids actually requeued. The agent is
    marked offline before its first job is requeued, so the matcher gives the jobs to another agent, not back
    to this one."""
    released = []
    for job_id in job_ids:
        try:
            job = own_job(agent.agent_id, job_id)
            registry.mark_draining(agent.agent_id)
            lifecycle.release(job, agent.agent_id)
        except (NotFound, lifecycle.Conflict):
            continue
        service.after_move(job)
        released.append(job_id)
    return released
