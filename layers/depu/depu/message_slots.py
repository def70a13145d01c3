"""Message slots: one chat message that several notices, queued at different times, send and then edit.

A chain alert is sent at inclusion and edited when it is confirmed or a reorganisation drops it; the
indexer that queues those notices never learns the Telegram message id, because the notifier sends them
later. So a notice names a *slot* (``Notice.slot``) and a version (``Notice.slot_version``): the notifier
sends version 0 as a new message and records its id in the slot; a later version is an edit of the recorded
message. Versions only move forward: an older edit that arrives late (a retried record) is dropped, never
applied over a newer one. An edit whose first message has not been delivered yet raises ``SlotNotReady``,
so SQS retries it after the send.

Slots are delivery state, like the notifier's idempotency records, so they live in the same table
(``IdempotencyTable``, key ``id``, items ``slot#<name>``) and expire with ``expiration`` after 30 days.
"""
from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from depu.config import get_settings

SLOT_DAYS = 30


class SlotNotReady(RuntimeError):
    """An edit of a slot whose first message has not been delivered (or recorded) yet: retry later."""


class Stale:
    """Marker: the slot already shows this version or a newer one."""


STALE = Stale()


@lru_cache(maxsize=1)
def _table() -> Any:
    import boto3

    return boto3.resource("dynamodb").Table(get_settings().idempotency_table)


def _key(slot: str) -> dict[str, str]:
    return {"id": f"slot#{slot}"}


def target(slot: str, version: int) -> int | None | Stale:
    """The message id a notice of ``version`` edits: ``None`` for a first send, ``STALE`` when the slot
    is already at ``version`` or beyond."""
    item = _table().get_item(Key=_key(slot), ConsistentRead=True).get("Item")
    if item is not None and int(item.get("version", -1)) >= version:
        return STALE
    if version == 0:
        return None
    if item is None or "message_id" not in item:
        raise SlotNotReady(f"slot {slot} has no message yet")
    return int(item["message_id"])


def record(slot: str, message_id: int, version: int) -> None:
    """Remember which message the slot shows and at which version (only ever forwards)."""
    from botocore.exceptions import ClientError

    try:
        _table().update_item(
            Key=_key(slot), UpdateExpression="SET message_id = :m, version = :v, expiration = :e",
            ConditionExpression="attribute_not_exists(version) OR version < :v",
            ExpressionAttributeValues={":m": message_id, ":v": version,
                                       ":e": int(time.time()) + SLOT_DAYS * 86400})
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise


def message_id(slot: str) -> int | None:
    """The message a slot shows (for tests and views)."""
    item = _table().get_item(Key=_key(slot), ConsistentRead=True).get("Item")
    return int(item["message_id"]) if item and "message_id" in item else None
