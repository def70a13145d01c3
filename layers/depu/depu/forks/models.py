"""The ForksTable and JournalTable items.

Status moves only forward through conditional writes, most of them made by the Step Functions state machines:
requested -> provisioning -> active <-> syncing, active -> provisioning (rebuild after host loss),
any -> deleting -> deleted, provisioning -> failed.
"""
from __future__ import annotations

from datetime import datetime, timezone

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from depu.config import get_settings

REQUESTED = "requested"
PROVISIONING = "provisioning"
ACTIVE = "active"
SYNCING = "syncing"
DELETING = "deleting"
DELETED = "deleted"
FAILED = "failed"
ALIVE = frozenset({REQUESTED, PROVISIONING, ACTIVE, SYNCING})
SERVING = frozenset({ACTIVE, SYNCING})  # a host answers reads; writes only while ACTIVE


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ForksByUser(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_user"
        projection = AllProjection()

    user_id = NumberAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class ForksByTaskHost(GlobalSecondaryIndex):
    """Forks with a task waiting for a given host (``task_host`` is set only while one waits): how a host
    finds the tasks addressed to it, and only those (depu.forks.tasks)."""

    class Meta:
        index_name = "by_task_host"
        projection = AllProjection()

    task_host = UnicodeAttribute(hash_key=True)


class Fork(Model):
    """One shadow fork. ``chain_id`` is its own (``chainids``), set at creation and passed to every anvil that
    serves it. ``next_seq``/``lock_until`` serialise journal writes; ``host_snapshots`` maps a
    snapshot's journal seq (the id users see) to the id anvil gave it on the current host. ``host_secrets``
    maps a host RPC URL to the secret that host's front demands (see ``tasks``): a credential of the
    proxy-to-host link, not a user's token (docs/security.md), never shown to users or put in a state machine's
    input or history. ``assigned_host`` is the approved host the API chose to build the fork (depu.forks.hosts);
    ``task_host`` names the host a waiting task is addressed to; ``tried_hosts`` the hosts that failed to build it."""

    class Meta:
        table_name = get_settings().forks_table

    fork_id = UnicodeAttribute(hash_key=True)
    user_id = NumberAttribute()
    chat_id = NumberAttribute()
    created_at = UnicodeAttribute()
    status = UnicodeAttribute(default=REQUESTED)
    block_requested = UnicodeAttribute(default="latest")
    base_block = NumberAttribute(null=True)
    chain_id = NumberAttribute(null=True)
    host_agent_id = UnicodeAttribute(null=True)
    host_rpc_url = UnicodeAttribute(null=True)
    host_secrets = JSONAttribute(null=True)
    rpc_token_hash = UnicodeAttribute(null=True)
    auto_sync = BooleanAttribute(default=False)
    follow = BooleanAttribute(null=True)  # follow mainnet block by block on the host (None: a fork from before follow mode)
    follow_conflicts_seen = NumberAttribute(default=0)  # follow-mode conflicts the user was told about (janitor)
    sync_interval_s = NumberAttribute(default=600)
    sync_loop = UnicodeAttribute(default="")
    expires_at = NumberAttribute()
    warned = BooleanAttribute(default=False)
    next_seq = NumberAttribute(default=0)
    lock_until = NumberAttribute(default=0)
    budget_minute = NumberAttribute(default=0)  # the minute (epoch // 60) budget_blocks/_seconds count (limits.py)
    budget_blocks = NumberAttribute(default=0)
    budget_seconds = NumberAttribute(default=0)
    host_snapshots = JSONAttribute(default=dict)
    conflicts = UnicodeAttribute(null=True)
    conflict_count = NumberAttribute(default=0)
    last_synced_at = UnicodeAttribute(null=True)
    last_sync_error = UnicodeAttribute(null=True)
    failure = UnicodeAttribute(null=True)
    pending_task = JSONAttribute(null=True)
    rebuilds = NumberAttribute(default=0)
    assigned_host = UnicodeAttribute(null=True)
    task_host = UnicodeAttribute(null=True)
    tried_hosts = ListAttribute(of=UnicodeAttribute, null=True)
    create_execution = UnicodeAttribute(null=True)
    delete_execution = UnicodeAttribute(null=True)
    deleted_at = UnicodeAttribute(null=True)

    by_user = ForksByUser()
    by_task_host = ForksByTaskHost()


class JournalEntry(Model):
    """One user write, in the order the fork applied it. ``outcome`` is what it did (see ``outcomes``)."""

    class Meta:
        table_name = get_settings().journal_table

    fork_id = UnicodeAttribute(hash_key=True)
    seq = NumberAttribute(range_key=True)
    method = UnicodeAttribute()
    params = JSONAttribute(default=list)
    outcome = JSONAttribute(null=True)
    created_at = UnicodeAttribute()
