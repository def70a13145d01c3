"""Per-user limits on /export: at most ``MAX_RUNNING`` export being built at a time, ``MAX_PER_HOUR`` per hour.

An export reads up to 10,000 blocks of Parquet and writes a file of up to tens of MB; without limits one user
could queue thousands and keep the exporter (and the bucket) busy for everyone. The limits are one item per
user in the chain table (``pk = EXPORTQUOTA#<user id>``), and taking a slot is a single conditional write, so
two /export commands racing each other cannot both pass: DynamoDB decides.

The item holds the request that is running (``running``, ``running_since``) and a fixed hourly window
(``window_start``, ``window_count``). The bot takes the slot before it queues a request; the exporter gives it
back when the file is delivered, and renews it while an export runs on over several exporter runs
(``renew``). If the exporter never does (every retry failed and the request went to the
dead-letter queue), the slot lapses after ``RUNNING_LEASE_SECONDS``: the longest the queue keeps retrying.
A fixed window lets a user start up to twice ``MAX_PER_HOUR`` around the turn of an hour; the running limit
still holds them to one at a time.
"""
from __future__ import annotations

import re
import time
from typing import Any

from botocore.exceptions import ClientError

from depu.chain import store
from depu.errors import UserError

MAX_RUNNING = 1
MAX_PER_HOUR = 10
WINDOW_SECONDS = 3600
# ExportQueue: 3 receives × 720 s visibility, plus the exporter's 600 s timeout (template.yaml)
RUNNING_LEASE_SECONDS = 3 * 720 + 600
SK = "QUOTA"
_PLACEHOLDER = re.compile(r":\w+")


class ExportLimited(UserError):
    """The user is over a limit; the message says which and when to try again."""


def _key(user_id: int) -> dict[str, str]:
    return {"pk": f"EXPORTQUOTA#{int(user_id)}", "sk": SK}


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def acquire(user_id: int, request_id: str, *, now: float | None = None) -> None:
    """Take the user's export slot for ``request_id``, or raise ``ExportLimited``."""
    current = int(time.time() if now is None else now)
    window = current - current % WINDOW_SECONDS
    values: dict[str, Any] = {":rid": request_id, ":now": current, ":stale": current - RUNNING_LEASE_SECONDS,
                              ":window": window, ":max": MAX_PER_HOUR, ":one": 1,
                              ":expires": current + max(WINDOW_SECONDS, RUNNING_LEASE_SECONDS) * 2}
    free = "(attribute_not_exists(running) OR running_since < :stale)"
    attempts = (
        # the same hour: one more, if under the hourly limit
        (f"{free} AND window_start = :window AND window_count < :max",
         "SET running = :rid, running_since = :now, window_count = window_count + :one, expires_at = :expires"),
        # a new hour (or a first export): the count starts again
        (f"{free} AND (attribute_not_exists(window_start) OR window_start < :window)",
         "SET running = :rid, running_since = :now, window_start = :window, window_count = :one, "
         "expires_at = :expires"),
    )
    for condition, update in attempts:
        try:
            used = set(_PLACEHOLDER.findall(condition + " " + update))  # DynamoDB refuses unused values
            store.table().update_item(Key=_key(user_id), ConditionExpression=condition, UpdateExpression=update,
                                      ExpressionAttributeValues={k: v for k, v in values.items() if k in used})
            return
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
    raise _refusal(user_id, current)


def _refusal(user_id: int, now: int) -> ExportLimited:
    item = store.table().get_item(Key=_key(user_id), ConsistentRead=True).get("Item") or {}
    if item.get("running") and int(item.get("running_since", 0)) >= now - RUNNING_LEASE_SECONDS:
        return ExportLimited("⏳ Your previous export is still being prepared. You can start the next one "
                             "when its file has arrived here.")
    minutes = max(1, (int(item.get("window_start", now)) + WINDOW_SECONDS - now + 59) // 60)
    return ExportLimited(f"⏳ You have started {MAX_PER_HOUR} exports this hour, the most allowed. "
                         f"Try again in {minutes} min.")


def release(user_id: int, request_id: str) -> None:
    """Give the slot back (the export was delivered, or could not be queued). Only the request that holds the
    slot can free it, so a late redelivery of an old request never frees a newer one's."""
    try:
        store.table().update_item(Key=_key(user_id), ConditionExpression="running = :rid",
                                  UpdateExpression="REMOVE running, running_since",
                                  ExpressionAttributeValues={":rid": request_id})
    except ClientError as error:
        if not _is_condition_failure(error):
            raise


def renew(user_id: int, request_id: str, *, now: float | None = None) -> None:
    """Keep the slot of an export that is still being built: each exporter run that hands over to the next
    renews it, so an export longer than ``RUNNING_LEASE_SECONDS`` never lets the user start a second one
    beside it, while a dead one still lapses a lease after its last run."""
    current = int(time.time() if now is None else now)
    try:
        store.table().update_item(Key=_key(user_id), ConditionExpression="running = :rid",
                                  UpdateExpression="SET running_since = :now",
                                  ExpressionAttributeValues={":rid": request_id, ":now": current})
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
