"""Revoking an agent: its provider (from /provider) or an operator (scripts/revoke_agent.py) cuts it off.

Revocation is one conditional write on the agent's item (``revoked_at``), which every authenticated request
reads consistently (registry.authenticate): from the next request on, all of its tokens answer 401, and the
agent stops as it does on any 401. It is final: a revoked machine enrols again with a new enrolment token
and becomes a new agent. The same write moves it out of the online window and the matcher's assign
condition refuses revoked agents, so no new job reaches it; the jobs it holds go back to the queue at once
(free for their users) instead of waiting for their leases to run out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from pynamodb.exceptions import UpdateError

from depu.agents.registry import Agent, get_agent
from depu.jobs import lifecycle, service
from depu.jobs.leases import ONLINE_SECONDS
from depu.jobs.models import Job

REVOKED = "revoked"
ALREADY_REVOKED = "already revoked"
NOT_FOUND = "not found"


@dataclass(frozen=True)
class Revocation:
    outcome: str
    agent: Agent | None = None
    requeued: list[str] = field(default_factory=list)


def revoke(agent_id: str, *, by: str, provider_id: int | None = None) -> Revocation:
    """Revoke ``agent_id``. With ``provider_id`` only that provider's agent (another's is NOT_FOUND, like a
    missing one); without it (an operator) any agent. ``by`` says who, for the record."""
    agent = get_agent(agent_id) if isinstance(agent_id, str) and 0 < len(agent_id) <= 40 else None
    if agent is None or (provider_id is not None and int(agent.provider_id) != int(provider_id)):
        return Revocation(NOT_FOUND)
    now = int(time.time())
    condition = Agent.agent_id.exists() & Agent.revoked_at.does_not_exist()
    if provider_id is not None:
        condition &= Agent.provider_id == int(provider_id)
    try:
        agent.update(
            actions=[Agent.revoked_at.set(now), Agent.revoked_by.set(str(by)[:64]),
                     Agent.last_seen_at.set(min(int(agent.last_seen_at), now - ONLINE_SECONDS - 1))],
            condition=condition,
        )
    except UpdateError as error:
        if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise
        return Revocation(ALREADY_REVOKED, get_agent(agent_id))
    return Revocation(REVOKED, agent, _requeue_jobs_of(agent_id))


def _requeue_jobs_of(agent_id: str) -> list[str]:
    requeued = []
    for job in Job.by_agent.query(agent_id, filter_condition=Job.status.is_in(*lifecycle.HOLDS_AGENT_SLOT)):
        try:
            job.refresh(consistent_read=True)
            lifecycle.release(job, agent_id)
        except lifecycle.Conflict:
            continue  # it moved on by itself meanwhile (finished, cancelled, reaped)
        service.after_move(job)
        requeued.append(job.job_id)
    return requeued
