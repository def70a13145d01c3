"""The lease reaper's sweep: take back what timed out, retry or give up, and settle anything left unsettled.

Each kind of timeout is one Query on by_status (status, lease_expires_at < now), so a sweep costs a few reads
plus one conditional write per job it moves. Every move is conditioned on the lease still being expired, so a
heartbeat that renews a lease while the reaper runs wins cleanly.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from depu.jobs import lifecycle, metering, service
from depu.jobs.models import Job

log = logging.getLogger(__name__)
BATCH = 100
UNSETTLED_LOOKBACK_SECONDS = 24 * 3600
UNSETTLED_GRACE_SECONDS = 60


@dataclass
class Sweep:
    offers_returned: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)


def _due(status: str, now: int) -> list[Job]:
    return list(Job.by_status.query(status, Job.lease_expires_at < now, limit=BATCH))


def sweep(now: int | None = None) -> Sweep:
    now = now or int(time.time())
    result = Sweep()
    for job in _due(lifecycle.ASSIGNED, now):
        if _move(lifecycle.offer_expired, job, now):
            service.after_move(job)
            result.offers_returned.append(job.job_id)
    for job in _due(lifecycle.RUNNING, now):
        lost_by = job.agent_id
        if _move(lifecycle.lease_lost, job, now):
            _count_lost_lease(lost_by)
            service.after_move(job, retry=True)
            (result.retried if job.status == lifecycle.QUEUED else result.failed).append(job.job_id)
    for job in _due(lifecycle.QUEUED, now):
        if _move(lifecycle.expire, job, now):
            service.after_move(job)
            result.expired.append(job.job_id)
    for status in lifecycle.TERMINAL:
        window = Job.lease_expires_at.between(now - UNSETTLED_LOOKBACK_SECONDS, now - UNSETTLED_GRACE_SECONDS)
        for job in Job.by_status.query(status, window, filter_condition=Job.settled == False, limit=BATCH):  # noqa: E712
            metering.settle(job)
            result.settled.append(job.job_id)
    return result


def _count_lost_lease(agent_id: str | None) -> None:
    """A lost lease lowers the agent's reliability score (depu.agents.challenges.reliability)."""
    from depu.agents.registry import Agent

    if agent_id:
        try:
            Agent(agent_id).update(actions=[Agent.leases_lost.add(1)], condition=Agent.agent_id.exists())
        except Exception:  # noqa: BLE001 - a deleted agent or a throttled write must not stop the sweep
            pass


def _move(move, job: Job, now: int) -> bool:  # noqa: ANN001 - one of lifecycle's timeout moves
    try:
        move(job, now)
    except lifecycle.Conflict:
        return False  # renewed, claimed or finished meanwhile
    return True
