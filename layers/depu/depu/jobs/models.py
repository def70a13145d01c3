"""The Job item on JobsTable and its three indexes (by_user, by_agent, by_status).

``lease_expires_at`` is always set, so every job appears in ``by_status``; its meaning follows the state:
the queue deadline for ``queued``, the claim deadline for ``assigned``, the lease expiry for ``running`` and
the finish time for terminal states. One index thus serves the reaper for every kind of timeout.
"""
from __future__ import annotations

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

from depu.config import get_settings


class JobsByUser(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_user"
        projection = AllProjection()

    user_id = NumberAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class JobsByAgent(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_agent"
        projection = AllProjection()

    agent_id = UnicodeAttribute(hash_key=True)
    status = UnicodeAttribute(range_key=True)


class JobsByProvider(GlobalSecondaryIndex):
    """A provider's jobs (sparse: only jobs an agent took carry ``provider_id``), with just what /provider's
    per-machine earnings need, so they are one query, not one per machine."""

    class Meta:
        index_name = "by_provider"
        projection = IncludeProjection(["agent_id", "status", "provider_earned"])

    provider_id = NumberAttribute(hash_key=True)


class JobsByStatus(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_status"
        projection = AllProjection()

    status = UnicodeAttribute(hash_key=True)
    lease_expires_at = NumberAttribute(range_key=True)


class Job(Model):
    class Meta:
        table_name = get_settings().jobs_table

    job_id = UnicodeAttribute(hash_key=True)
    user_id = NumberAttribute()
    chat_id = NumberAttribute()
    created_at = UnicodeAttribute()
    status = UnicodeAttribute()
    lease_expires_at = NumberAttribute()
    agent_id = UnicodeAttribute(null=True)
    provider_id = NumberAttribute(null=True)

    gpu_class = UnicodeAttribute()
    workload = UnicodeAttribute()
    params = JSONAttribute(default=dict)
    time_limit_s = NumberAttribute()
    script_key = UnicodeAttribute(null=True)
    input_keys = ListAttribute(of=UnicodeAttribute, null=True)  # a job spec's input files (storage.input_key)
    # each input's size and ETag when it was checked (depu.jobs.uploads.confirm): the agent's link is pinned to it
    input_sizes = ListAttribute(of=NumberAttribute, null=True)
    input_etags = ListAttribute(of=UnicodeAttribute, null=True)

    price_per_hour = NumberAttribute()
    max_cost = NumberAttribute()
    hold_id = UnicodeAttribute()

    attempt = NumberAttribute(default=0)
    failed_agents = ListAttribute(of=UnicodeAttribute, default=list)
    # Of those, the agents whose retryable failure came before the job's code started (its setup): charged to
    # them only if the job then succeeds elsewhere (depu.agents.setup_failures).
    setup_failed_agents = ListAttribute(of=UnicodeAttribute, null=True)
    gpu_index = NumberAttribute(null=True)
    # A job spec (depu.jobs.spec) may take several GPUs of one machine: gpu_index is the first of gpu_indices.
    gpu_count = NumberAttribute(default=1)
    gpu_indices = ListAttribute(of=NumberAttribute, null=True)
    # For a job spec, started_at is when the user's code started (billing starts there); setup (packages,
    # inputs) starts at claim, setup_started_at, and is bounded on its own (depu.jobs.leases.SETUP_LIMIT_SECONDS).
    setup_started_at = NumberAttribute(null=True)
    started_at = NumberAttribute(null=True)
    finished_at = NumberAttribute(null=True)
    billed_seconds = NumberAttribute(default=0)

    progress = NumberAttribute(default=0)
    message = UnicodeAttribute(null=True)
    metrics = JSONAttribute(null=True)
    logs_tail = ListAttribute(of=UnicodeAttribute, default=list)
    log_seq_max = NumberAttribute(default=-1)
    artifacts = ListAttribute(of=UnicodeAttribute, default=list)
    # Provider budgets (depu.jobs.work): bytes of log chunks stored, artifact links handed out (distinct
    # names and bytes signed for), and each completed artifact's ETag, so a later overwrite is noticed.
    log_bytes = NumberAttribute(default=0)
    artifact_names = UnicodeSetAttribute(null=True)
    artifact_bytes = NumberAttribute(default=0)
    artifact_etags = ListAttribute(of=UnicodeAttribute, null=True)
    result = JSONAttribute(null=True)
    error = UnicodeAttribute(null=True)

    charged = NumberAttribute(null=True)
    provider_earned = NumberAttribute(null=True)
    settled = BooleanAttribute(default=False)

    progress_message_id = NumberAttribute(null=True)
    progress_notified_at = NumberAttribute(default=0)

    by_user = JobsByUser()
    by_agent = JobsByAgent()
    by_provider = JobsByProvider()
    by_status = JobsByStatus()
