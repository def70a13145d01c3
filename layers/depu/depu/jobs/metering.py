"""Per-second metering of GPU time: the most a job can cost (held at submit) and what it did cost (settled
once at the end, through ``depu.credits``, which also credits the provider's earnings on the same ledger).

What the user pays for is the last attempt's run time, capped at the time limit: an attempt lost because a
provider went silent costs the user nothing and earns that provider nothing.
"""
from __future__ import annotations

import math
import time

from depu import credits
from depu.jobs.models import Job

AGENT_LOST = "agent lost"
PROVIDER_SHARE_PCT = 80  # providers earn 80% of what a job is charged; DePU keeps the rest as its fee


def max_cost(price_per_hour: int, time_limit_s: int) -> int:
    """What a job may cost at most: its whole time limit at the class price, rounded up to a credit."""
    return max(1, math.ceil(price_per_hour * time_limit_s / 3600))


def cost_of(price_per_hour: int, seconds: float) -> int:
    """Credits for ``seconds`` of GPU time, billed per second and rounded up to a whole credit."""
    return math.ceil(price_per_hour * max(0.0, seconds) / 3600) if seconds > 0 else 0


def billed_seconds(job: Job) -> int:
    """Seconds of the final attempt, capped at the time limit; 0 if it never started on an agent or the
    provider lost it."""
    if job.started_at is None or (job.error or "").startswith(AGENT_LOST):
        return 0
    end = job.finished_at if job.finished_at is not None else time.time()
    return int(min(max(0.0, float(end) - float(job.started_at)), float(job.time_limit_s)))


def settle(job: Job) -> int:
    """Close the job's hold exactly once: charge the metered cost (never more than was held) or, if nothing
    ran, release it. Safe to call again (a retried complete, the reaper's sweep): the ledger is idempotent
    by hold id and returns what the first call charged."""
    seconds = billed_seconds(job)
    charge = min(cost_of(int(job.price_per_hour), seconds), int(job.max_cost))
    if charge > 0:
        charged = credits.settle(
            int(job.user_id),
            job.hold_id,
            charge,
            provider_id=int(job.provider_id) if job.provider_id is not None else None,
            job_id=job.job_id,
            provider_share_pct=PROVIDER_SHARE_PCT,
        )
    else:
        credits.release(int(job.user_id), job.hold_id)
        charged = 0
    job.update(
        actions=[
            Job.settled.set(True),
            Job.charged.set(charged),
            Job.provider_earned.set(
                credits.provider_earnings(charged, PROVIDER_SHARE_PCT) if job.provider_id is not None else 0
            ),
            Job.billed_seconds.set(seconds),
        ]
    )
    return charged
