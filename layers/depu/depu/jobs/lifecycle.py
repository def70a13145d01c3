"""The job lifecycle, all of it: states, the legal transitions, and every move as one conditional write.

    queued ──assign──▶ assigned ──claim──▶ running ──complete──▶ succeeded
      │  ▲               │   │               │ │ ──fail (final)─▶ failed
      │  └──offer_expired┘   │               │ └──lease lost (last attempt)─▶ failed
      │  ▲──release──────────┘               │
      │  └──release / retryable fail / lease lost (attempts left)─┘
      ├──expire (nobody took it in time)──▶ expired
      └──cancel (from queued, assigned or running)──▶ cancelled

Every move is a DynamoDB update conditioned on the state (and owner agent) the caller read, so of two racing
writers exactly one wins and the other gets ``Conflict`` with the state it lost to: two agents can never both
own a job, and a terminal state is final. Moves that give a job to an agent or take it back also change that
agent's ``busy`` count in the same transaction, so an agent's load always equals its assigned + running jobs.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from depu.agents.registry import RENTAL_CAPABILITY, Agent
from depu.jobs.leases import LEASE_SECONDS, MAX_ATTEMPTS, MAX_QUEUE_SECONDS, OFFER_SECONDS
from depu.jobs.models import Job
from depu.jobs.spec import WORKLOAD as SPEC_WORKLOAD

if TYPE_CHECKING:
    from pynamodb.expressions.condition import Condition
    from pynamodb.expressions.update import Action

QUEUED = "queued"
ASSIGNED = "assigned"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
EXPIRED = "expired"

STATES = (QUEUED, ASSIGNED, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
ACTIVE = frozenset({QUEUED, ASSIGNED, RUNNING})
HOLDS_AGENT_SLOT = frozenset({ASSIGNED, RUNNING})

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({ASSIGNED, CANCELLED, EXPIRED}),
    ASSIGNED: frozenset({RUNNING, QUEUED, CANCELLED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, QUEUED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    EXPIRED: frozenset(),
}


class Conflict(Exception):
    """The move is not legal from the job's current state (or another writer got there first)."""

    def __init__(self, job_id: str, current: str, wanted: str):
        super().__init__(f"job {job_id} is {current}; cannot move to {wanted}")
        self.job_id, self.current, self.wanted = job_id, current, wanted


class AgentFull(Exception):
    """The agent has no free slot (or is no longer fit); the matcher tries the next candidate."""


def is_legal(current: str, wanted: str) -> bool:
    return wanted in TRANSITIONS.get(current, frozenset())


def _now() -> int:
    return int(time.time())


def transition(
    job: Job,
    wanted: str,
    *,
    actions: list[Action] | None = None,
    when: Condition | None = None,
    assign_to: Agent | None = None,
) -> Job:
    """Move ``job`` from the state it was read in to ``wanted``, atomically; refreshes ``job`` in place."""
    current = job.status
    if not is_legal(current, wanted):
        raise Conflict(job.job_id, current, wanted)
    condition = Job.status == current
    condition &= (Job.agent_id == job.agent_id) if job.agent_id else Job.agent_id.does_not_exist()
    if when is not None:
        condition &= when
    updates: list[Action] = [Job.status.set(wanted), *(actions or [])]

    takes_slot = wanted in HOLDS_AGENT_SLOT and current not in HOLDS_AGENT_SLOT
    frees_slot = current in HOLDS_AGENT_SLOT and wanted not in HOLDS_AGENT_SLOT
    if takes_slot:
        if assign_to is None:
            raise ValueError("a move into an agent's hands names the agent")
        updates.append(Job.agent_id.set(assign_to.agent_id))
        updates.append(Job.provider_id.set(assign_to.provider_id))
    if frees_slot and wanted == QUEUED:
        updates.append(Job.agent_id.remove())
        updates.append(Job.provider_id.remove())

    if not (takes_slot or frees_slot):
        try:
            job.update(actions=updates, condition=condition)
        except UpdateError as error:
            if _condition_failed(error):
                _raise_current(job, wanted)
            raise
        return job

    with_agent = assign_to if takes_slot else Agent(job.agent_id)
    slots = slots_of(job)
    agent_actions = [Agent.busy.add(slots if takes_slot else -slots)]
    agent_condition = None
    if takes_slot:
        if slots == 1:
            room = Agent.busy < Agent.gpu_count
        else:  # DynamoDB cannot add to an attribute in a condition: the busy count read must still hold
            seen = int(assign_to.busy or 0)
            if seen + slots > int(assign_to.gpu_count or 1):
                raise AgentFull(assign_to.agent_id)
            room = (Agent.busy == seen) if assign_to.busy is not None else Agent.busy.does_not_exist()
        agent_condition = (
            room
            & (Agent.verified == True)  # noqa: E712 - a PynamoDB condition, not a comparison
            & (Agent.gpu_class == job.gpu_class)
            & Agent.capabilities.contains(RENTAL_CAPABILITY)
            & Agent.revoked_at.does_not_exist()  # a revoked agent is never given a job
        )
    try:
        with TransactWrite(connection=Job._get_connection().connection) as transaction:
            transaction.update(job, actions=updates, condition=condition)
            transaction.update(with_agent, actions=agent_actions, condition=agent_condition)
    except TransactWriteError as error:
        reasons = [getattr(reason, "code", None) for reason in error.cancellation_reasons]
        if reasons and reasons[0] == "ConditionalCheckFailed":
            _raise_current(job, wanted)
        if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
            raise AgentFull(with_agent.agent_id) from error
        raise
    job.refresh(consistent_read=True)
    return job


def slots_of(job: Job) -> int:
    """How many of an agent's GPU slots the job takes (a job spec's gpu_count; 1 for every other job)."""
    return max(1, int(job.gpu_count or 1))


def _condition_failed(error: Exception) -> bool:
    return getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException"


def _raise_current(job: Job, wanted: str) -> None:
    job.refresh(consistent_read=True)
    raise Conflict(job.job_id, job.status, wanted)


# ---------------------------------------------------------------- the named moves


def assign(job: Job, agent: Agent) -> Job:
    """Matcher: offer a queued job to ``agent``; it has OFFER_SECONDS to claim it."""
    return transition(job, ASSIGNED, assign_to=agent, actions=[Job.lease_expires_at.set(_now() + OFFER_SECONDS)])


def claim(job: Job, agent_id: str, gpu_index: int, gpu_indices: list[int] | None = None) -> Job:
    """Agent: start the job it was offered; this starts an attempt and its lease. A job spec's billing starts
    later, when its code starts (``code_started``): until then it is setting up, unbilled."""
    _require_owner(job, agent_id, RUNNING)
    now = _now()
    start = [Job.setup_started_at.set(now), Job.started_at.remove()] if job.workload == SPEC_WORKLOAD \
        else [Job.started_at.set(now)]
    return transition(
        job,
        RUNNING,
        actions=[
            Job.attempt.add(1),
            Job.gpu_index.set(gpu_index),
            Job.gpu_indices.set(list(gpu_indices or [gpu_index])),
            *start,
            Job.lease_expires_at.set(now + LEASE_SECONDS),
            Job.progress.set(0),
            Job.error.remove(),
        ],
    )


def code_started(job: Job, agent_id: str) -> bool:
    """A job spec's code starts now (its setup is done): billing starts here. True the first time."""
    try:
        job.update(actions=[Job.started_at.set(_now())],
                   condition=(Job.status == RUNNING) & (Job.agent_id == agent_id) & Job.started_at.does_not_exist())
    except UpdateError as error:
        if _condition_failed(error):
            return False
        raise
    return True


def renew_lease(job: Job, agent_id: str, also: list[Action] | None = None) -> bool:
    """Heartbeat: extend the lease of a job this agent is running (and apply ``also``, e.g. its latest GPU
    metrics, in the same write); False if it no longer runs it."""
    if job.status != RUNNING or job.agent_id != agent_id:
        return False
    try:
        job.update(
            actions=[Job.lease_expires_at.set(_now() + LEASE_SECONDS), *(also or [])],
            condition=(Job.status == RUNNING) & (Job.agent_id == agent_id),
        )
    except UpdateError as error:
        if _condition_failed(error):
            return False
        raise
    return True


def complete(job: Job, agent_id: str, result: dict, artifacts: list[str], etags: list[str] | None = None) -> Job:
    _require_owner(job, agent_id, SUCCEEDED)
    now = _now()
    return transition(
        job,
        SUCCEEDED,
        actions=[
            Job.result.set(result),
            Job.artifacts.set(artifacts),
            Job.artifact_etags.set(list(etags or [])),
            Job.progress.set(1),
            Job.finished_at.set(now),
            Job.lease_expires_at.set(now),
        ],
    )


def fail(job: Job, agent_id: str, error: str, retryable: bool) -> Job:
    """Agent: the attempt failed. A retryable failure with attempts left goes back to the queue, excluding
    this agent; anything else is final."""
    _require_owner(job, agent_id, FAILED)
    now = _now()
    if retryable and int(job.attempt) < MAX_ATTEMPTS:
        # the whole list from this read: the move is conditioned on the job's state and owner, so it is current
        noted = [Job.setup_failed_agents.set([*(job.setup_failed_agents or []), agent_id])] \
            if in_setup(job) and agent_id not in (job.setup_failed_agents or []) else []
        return _requeue(job, exclude_agent=agent_id, error=error, extra=noted)
    return transition(
        job,
        FAILED,
        actions=[Job.error.set(error[:2000]), Job.finished_at.set(now), Job.lease_expires_at.set(now)],
    )


def in_setup(job: Job) -> bool:
    """A running job spec whose code has not started: it is setting up (unbilled)."""
    return job.workload == SPEC_WORKLOAD and job.status == RUNNING and job.started_at is None


def release(job: Job, agent_id: str) -> Job:
    """Agent shutting down: hand the job back without counting the attempt as a failure."""
    _require_owner(job, agent_id, QUEUED)
    actions = [Job.attempt.add(-1)] if job.status == RUNNING else []
    return _requeue(job, exclude_agent=None, extra=actions)


def cancel(job: Job, user_id: int) -> Job:
    """User: stop the job; a running agent learns it on its next heartbeat."""
    now = _now()
    return transition(
        job,
        CANCELLED,
        when=Job.user_id == user_id,
        actions=[Job.finished_at.set(now), Job.lease_expires_at.set(now)],
    )


def offer_expired(job: Job, now: int | None = None) -> Job:
    """Reaper: the agent did not claim its offer in time; the job goes back to the queue."""
    return _requeue(job, exclude_agent=None, when=Job.lease_expires_at < (now or _now()))


def lease_lost(job: Job, now: int | None = None) -> Job:
    """Reaper: the agent went silent. Retry elsewhere while attempts remain, else fail."""
    now = now or _now()
    when = Job.lease_expires_at < now
    if int(job.attempt) < MAX_ATTEMPTS:
        return _requeue(job, exclude_agent=job.agent_id, error="agent lost", when=when)
    return transition(
        job,
        FAILED,
        when=when,
        actions=[
            Job.error.set(f"agent lost on each of {MAX_ATTEMPTS} attempts"),
            Job.finished_at.set(now),
            Job.lease_expires_at.set(now),
        ],
    )


def overran(job: Job, agent_id: str) -> Job:
    """Heartbeat: the job is still running well past its time limit; the cloud stops it."""
    now = _now()
    return transition(
        job,
        FAILED,
        when=Job.agent_id == agent_id,
        actions=[Job.error.set("time limit exceeded"), Job.finished_at.set(now), Job.lease_expires_at.set(now)],
    )


def expire(job: Job, now: int | None = None) -> Job:
    """Reaper: no agent took the job before its queue deadline. A job that had attempts (each failed and
    excluded its agent) keeps the last one's reason: "your image does not exist" beats "nobody took it"."""
    now = now or _now()
    why = "no provider took the job in time"
    if job.error and job.failed_agents:
        why += f"; its last attempt failed: {job.error}"
    return transition(
        job,
        EXPIRED,
        when=Job.lease_expires_at < now,
        actions=[Job.error.set(why[:2000]), Job.finished_at.set(now), Job.lease_expires_at.set(now)],
    )


def _requeue(
    job: Job,
    *,
    exclude_agent: str | None,
    error: str | None = None,
    when: Condition | None = None,
    extra: list[Action] | None = None,
) -> Job:
    actions = [
        Job.lease_expires_at.set(_now() + MAX_QUEUE_SECONDS),
        Job.gpu_index.remove(),
        Job.gpu_indices.remove(),
        Job.setup_started_at.remove(),
        Job.started_at.remove(),
        Job.progress.set(0),
        *(extra or []),
    ]
    if exclude_agent and exclude_agent not in (job.failed_agents or []):
        actions.append(Job.failed_agents.set(Job.failed_agents.append([exclude_agent])))
    if error:
        actions.append(Job.error.set(error[:2000]))
    return transition(job, QUEUED, actions=actions, when=when)


def _require_owner(job: Job, agent_id: str, wanted: str) -> None:
    if job.agent_id != agent_id:
        raise Conflict(job.job_id, job.status, wanted)
