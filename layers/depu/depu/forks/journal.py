"""The journal: the user's writes to a fork, in the order the fork applied them.

Writes to one fork are serialised by a short lease on the fork item (``lock_until``) taken with a conditional
update that also reserves the entry's ``seq`` and requires the fork to be active. So entries are numbered in
the order anvil executed them, and no write lands while the fork is syncing or being rebuilt (its journal is
being replayed elsewhere). A seq whose write failed is simply never written: the journal may have gaps.

The lease alone cannot promise order: a write still in flight when its lease runs out (the forward may take
longer than the lease) could reach the host after a later write. So the proxy sends every write's seq to the
host's front (``X-DePU-Write-Seq``), which applies writes strictly in increasing seq order and refuses one whose
seq is not above the last it applied: a late write is refused, never applied out of order, and so never
journaled (see agent/depu_agent/forkfront.py).
"""
from __future__ import annotations

import time
from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from depu.forks import limits
from depu.forks.models import ACTIVE, Fork, JournalEntry, utcnow_iso

LEASE_SECONDS = 15.0
WAIT_SECONDS = 5.0
RECORD_MARGIN_SECONDS = 1.0  # a lease this close to its end no longer vouches for a write (clock skew, latency)


class WriteRefused(Exception):
    """The fork cannot take a write now: ``reason`` is 'busy' (another write holds the lease), 'budget'
    (the fork's per-minute mining/time budget is spent; ``detail`` says which) or its status."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.detail = ""


def begin_write(fork_id: str) -> tuple[Fork, int, float]:
    """Take the fork's write lease and reserve the next seq; returns ``(fork, seq, lease)``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        now = time.time()
        lease = round(now + LEASE_SECONDS, 3)
        fork = Fork(fork_id)
        try:
            fork.update(
                actions=[Fork.lock_until.set(lease), Fork.next_seq.add(1)],
                condition=(Fork.status == ACTIVE) & (Fork.lock_until < now),
            )
            return fork, int(fork.next_seq) - 1, lease
        except UpdateError as error:
            if not _conditional(error):
                raise
        current = Fork.get(fork_id, consistent_read=True)
        if current.status != ACTIVE:
            raise WriteRefused(current.status)
        if time.monotonic() > deadline:
            raise WriteRefused("busy")
        time.sleep(0.02)


def charge(fork: Fork, lease: float, cost: limits.Cost) -> None:
    """Charge ``cost`` to the fork's budget for this minute, under our lease (read-modify-write is safe: the
    lease makes us the fork's only writer, and the condition checks it is still ours). WriteRefused('budget')
    carries the reason in ``detail``."""
    if cost.free:
        return
    minute = limits.current_minute()
    same = int(fork.budget_minute or 0) == minute
    used_blocks = int(fork.budget_blocks or 0) if same else 0
    used_seconds = int(fork.budget_seconds or 0) if same else 0
    reason = limits.over_budget(cost, used_blocks, used_seconds)
    if reason:
        refused = WriteRefused("budget")
        refused.detail = reason
        raise refused
    try:
        fork.update(
            actions=[Fork.budget_minute.set(minute), Fork.budget_blocks.set(used_blocks + cost.blocks),
                     Fork.budget_seconds.set(used_seconds + cost.seconds)],
            condition=Fork.lock_until == lease,
        )
    except UpdateError as error:
        if not _conditional(error):
            raise
        raise WriteRefused("busy") from None


def end_write(fork_id: str, lease: float, host_snapshots: dict[str, Any] | None = None) -> None:
    """Release the lease (only if it is still ours), saving the snapshot map when it changed."""
    actions = [Fork.lock_until.set(0)]
    if host_snapshots is not None:
        actions.append(Fork.host_snapshots.set(host_snapshots))
    try:
        Fork(fork_id).update(actions=actions, condition=Fork.lock_until == lease)
    except UpdateError as error:
        if not _conditional(error):
            raise


def record(fork_id: str, seq: int, method: str, params: list[Any], outcome: dict[str, Any],
           lease: float | None = None) -> JournalEntry:
    """Journal a write the fork applied, in one transaction with a condition on the fork: it is still active,
    or the write still holds its lease (``lease``, with a margin), which a sync or rebuild waits out before it
    hands the journal to a host (``tasks._after_writes``). A write that outlived its lease while a sync or
    rebuild began may have landed on the old anvil after the journal was handed over: journaling it would give
    the journal an entry the new fork lacks. It is refused instead (WriteRefused with the fork's status and a
    ``detail``): the old anvil is being replaced, so the write is gone from the fork too, and the user is told
    to send it again."""
    entry = JournalEntry(fork_id, seq, method=method, params=params, outcome=outcome, created_at=utcnow_iso())
    condition = Fork.status == ACTIVE
    if lease is not None and lease > time.time() + RECORD_MARGIN_SECONDS:
        condition = condition | (Fork.lock_until == lease)
    try:
        with TransactWrite(connection=Fork._get_connection().connection) as transaction:
            transaction.condition_check(Fork, fork_id, condition=condition)
            transaction.save(entry, condition=JournalEntry.seq.does_not_exist())
    except TransactWriteError as error:
        reasons = [getattr(reason, "code", None) for reason in error.cancellation_reasons or []]
        if reasons and reasons[0] == "ConditionalCheckFailed":
            status = Fork.get(fork_id, consistent_read=True).status
            refused = WriteRefused(status)
            refused.detail = f"the fork became {status} while this write was on its way, so it is not kept; send it again once the fork is active"
            raise refused from None
        raise
    return entry


def entries(fork_id: str) -> list[JournalEntry]:
    return list(JournalEntry.query(fork_id, consistent_read=True, scan_index_forward=True))


def size(fork_id: str) -> int:
    return JournalEntry.count(fork_id, consistent_read=True)


def truncate_from(fork_id: str, seq: int) -> int:
    """Drop the entries at and after ``seq`` (an evm_revert to the snapshot taken at ``seq``)."""
    dropped = 0
    with JournalEntry.batch_write() as batch:
        for entry in JournalEntry.query(fork_id, JournalEntry.seq >= seq, consistent_read=True):
            batch.delete(entry)
            dropped += 1
    return dropped


def update_outcomes(fork_id: str, outcomes: dict[int, dict[str, Any]]) -> None:
    """After a rebase, the journal records what the entries do on the new base."""
    for seq, outcome in outcomes.items():
        try:
            JournalEntry(fork_id, seq).update(actions=[JournalEntry.outcome.set(outcome)], condition=JournalEntry.seq.exists())
        except UpdateError as error:
            if not _conditional(error):
                raise


def _conditional(error: Exception) -> bool:
    cause = getattr(error, "cause_response_code", None)
    return cause == "ConditionalCheckFailedException"
