"""The journal: the user's writes to a fork, in the order the fork applied them.

Writes to one fork are serialised by a short lease on the fork item (``lock_until``) taken with a conditional
update that also reserves the entry's ``seq`` and requires the fork to be active. So entries are numbered in
the order anvil executed them, and no write lands while the fork is syncing or being rebuilt (its journal is
being replayed elsewhere). A seq whose write failed is simply never written: the journal may have gaps.
"""
from __future__ import annotations

import time
from typing import Any

from pynamodb.exceptions import UpdateError

from depu.forks.models import ACTIVE, Fork, JournalEntry, utcnow_iso

LEASE_SECONDS = 15.0
WAIT_SECONDS = 5.0


class WriteRefused(Exception):
    """The fork cannot take a write now: ``reason`` is 'busy' (another write holds the lease) or its status."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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


def record(fork_id: str, seq: int, method: str, params: list[Any], outcome: dict[str, Any]) -> JournalEntry:
    entry = JournalEntry(fork_id, seq, method=method, params=params, outcome=outcome, created_at=utcnow_iso())
    entry.save(condition=JournalEntry.seq.does_not_exist())
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
