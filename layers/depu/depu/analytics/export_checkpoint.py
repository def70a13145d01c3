"""An export's checkpoint: how far through its range the exporter has come, across runs of the exporter.

An export longer than one exporter run (600 s) is built by a chain of runs, each started by a message on the
export queue that carries a *hop* number: the request's first message is hop 0, and a run that nears its
deadline queues hop n+1 and stops. The record (ChainTable, ``pk = EXPORTRUN#<request id>``) holds the hop that
owns the export, the cursor (the first block not yet exported), the number of part objects written, rows,
bytes, the progress message's next version and the state (building, composing, delivered, failed).

Every move is a conditional write, so at-least-once delivery cannot duplicate rows:

- ``claim``: a message of hop h takes the export if the record's hop is ≤ h; an older hop's message (a late
  redelivery, or the run that queued the continuation and then crashed) finds a newer hop and stops.
- ``handed_over``: after a run has queued hop h+1 it records so; a copy of hop h's message that arrives later
  (SQS delivers at least once) is then stale too. Recorded only after the send, so a crash between the two
  leaves the redelivered message to carry on, never an export nobody continues.
- ``advance``: a chunk's part is counted only if hop, cursor and part count are still what the run read, so
  of two runs holding the same hop (a duplicated continuation) exactly one moves the cursor; the other stops.
  Part objects are named by their position, so a run that crashed after writing a part and before its
  checkpoint rewrites the same object when it is redelivered, instead of adding one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from depu.analytics.export_compose import ComposeState
from depu.chain import store

BUILDING, COMPOSING, DELIVERED, FAILED = "building", "composing", "delivered", "failed"
SK = "RUN"
RECORD_DAYS = 8  # a day beyond the bucket's 7 days on exports/, so a record never outlives its file unexplained


@dataclass(frozen=True)
class Checkpoint:
    request_id: str
    hop: int
    cursor: int
    parts: int = 0
    rows: int = 0
    bytes: int = 0
    progress_version: int = 0
    progress_at: float = 0.0
    state: str = BUILDING
    runs: int = 1  # exporter runs that claimed the export (the first one included)
    created: bool = False  # this claim made the record (the export's first run)
    compose: ComposeState = ComposeState()

    def moved(self, **changes: Any) -> "Checkpoint":
        return replace(self, created=False, **changes)


def _key(request_id: str) -> dict[str, str]:
    return {"pk": f"EXPORTRUN#{request_id}", "sk": SK}


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _from_item(item: dict[str, Any], created: bool = False) -> Checkpoint:
    compose = ComposeState(item.get("compose_upload") or None, int(item.get("compose_next", 0)),
                           int(item.get("compose_parts", 0)), int(item.get("compose_written", 0)),
                           int(item.get("compose_leftover", 0)), bool(item.get("compose_done", False)))
    return Checkpoint(str(item["request_id"]), int(item["hop"]), int(item["cursor"]), int(item["parts"]),
                      int(item["rows"]), int(item["bytes"]), int(item["progress_version"]),
                      float(item["progress_at"]), str(item["state"]), int(item.get("runs", 1)), created,
                      compose)


def read(request_id: str) -> Checkpoint | None:
    item = store.table().get_item(Key=_key(request_id), ConsistentRead=True).get("Item")
    return _from_item(item) if item else None


def claim(request_id: str, hop: int, start: int) -> Checkpoint | None:
    """The checkpoint for a run started by a message of ``hop``, or None when a newer hop owns the export."""
    now = int(time.time())
    try:
        store.table().put_item(
            Item={**_key(request_id), "request_id": request_id, "hop": hop, "cursor": start, "parts": 0,
                  "rows": 0, "bytes": 0, "progress_version": 0, "progress_at": "0", "state": BUILDING,
                  "runs": 1, "expires_at": now + RECORD_DAYS * 86_400},
            ConditionExpression="attribute_not_exists(pk)")
        return Checkpoint(request_id, hop, start, created=True)
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
    try:
        item = store.table().update_item(
            Key=_key(request_id),
            ConditionExpression="hop <= :hop AND (attribute_not_exists(handed_to) OR handed_to <= :hop)",
            UpdateExpression="SET hop = :hop, runs = runs + :one",
            ExpressionAttributeValues={":hop": hop, ":one": 1}, ReturnValues="ALL_NEW")["Attributes"]
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
        return None
    return _from_item(item)


def handed_over(held: Checkpoint) -> None:
    """Record that the run holding ``held`` has queued hop ``held.hop + 1`` (nothing if that hop has already
    claimed the export)."""
    try:
        store.table().update_item(Key=_key(held.request_id), ConditionExpression="hop = :hop",
                                  UpdateExpression="SET handed_to = :next",
                                  ExpressionAttributeValues={":hop": held.hop, ":next": held.hop + 1})
    except ClientError as error:
        if not _is_condition_failure(error):
            raise


def advance(held: Checkpoint, moved: Checkpoint) -> bool:
    """Persist ``moved`` if the record still is ``held`` (same hop, cursor, parts and state); False: another
    run has taken the export or moved it on, and this run must stop without writing more."""
    try:
        store.table().update_item(
            Key=_key(held.request_id),
            ConditionExpression="hop = :hop AND #cursor = :cursor AND parts = :parts AND #state = :state",
            UpdateExpression="SET #cursor = :new_cursor, parts = :new_parts, #rows = :rows, #bytes = :bytes, "
                             "progress_version = :version, progress_at = :at, #state = :new_state",
            ExpressionAttributeNames={"#cursor": "cursor", "#state": "state", "#rows": "rows", "#bytes": "bytes"},
            ExpressionAttributeValues={
                ":hop": held.hop, ":cursor": held.cursor, ":parts": held.parts, ":state": held.state,
                ":new_cursor": moved.cursor, ":new_parts": moved.parts, ":rows": moved.rows, ":bytes": moved.bytes,
                ":version": moved.progress_version, ":at": repr(moved.progress_at), ":new_state": moved.state})
        return True
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
        return False


def advance_compose(held: Checkpoint, compose: ComposeState) -> Checkpoint | None:
    """Persist the compose's progress, and ``held``'s progress-message version and time (the compose edits
    that message too), if the record still is ``held`` (same hop, composing, same next part and upload
    parts, same upload or none yet); None: another run has moved it, and this one stops."""
    before = held.compose
    upload = ("(attribute_not_exists(compose_upload) OR compose_upload = :zero_upload)" if before.upload_id is None
              else "compose_upload = :upload")
    values: dict[str, Any] = {
        ":hop": held.hop, ":composing": COMPOSING, ":next": before.next_part, ":parts": before.upload_parts,
        ":new_next": compose.next_part, ":new_parts": compose.upload_parts, ":written": compose.written,
        ":leftover": compose.leftover, ":done": compose.done, ":new_upload": compose.upload_id or "",
        ":version": held.progress_version, ":at": repr(held.progress_at)}
    # a record from before compose checkpoints has no compose fields: the same as a compose not started
    position = "compose_next = :next AND compose_parts = :parts"
    if before.next_part == 0 and before.upload_parts == 0:
        position = "(attribute_not_exists(compose_next) OR (compose_next = :next AND compose_parts = :parts))"
    values.update({":upload": before.upload_id} if before.upload_id is not None else {":zero_upload": ""})
    try:
        store.table().update_item(
            Key=_key(held.request_id),
            ConditionExpression=f"hop = :hop AND #state = :composing AND {upload} AND {position}",
            UpdateExpression="SET compose_upload = :new_upload, compose_next = :new_next, "
                             "compose_parts = :new_parts, compose_written = :written, "
                             "compose_leftover = :leftover, compose_done = :done, "
                             "progress_version = :version, progress_at = :at",
            ExpressionAttributeNames={"#state": "state"}, ExpressionAttributeValues=values)
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
        return None
    return held.moved(compose=compose)


def fail(request_id: str) -> Checkpoint | None:
    """Mark the export failed (its last retry is going to the dead-letter queue), whatever hop holds it;
    returns the record as it was (None: never claimed, or already delivered, so nothing is marked)."""
    try:
        item = store.table().update_item(
            Key=_key(request_id), UpdateExpression="SET #state = :failed",
            ConditionExpression="attribute_exists(pk) AND #state <> :delivered",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":failed": FAILED, ":delivered": DELIVERED},
            ReturnValues="ALL_OLD")["Attributes"]
    except ClientError as error:
        if not _is_condition_failure(error):
            raise
        return None
    return _from_item(item)
