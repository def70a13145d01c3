"""Messages the back end sends to a user's chat (job progress, fork ready, alerts, exports).

They go through the notify queue, never straight to Telegram, so one consumer can respect Telegram's rate
limits (about 30 messages/s overall, 1 message/s per chat) and a failed send is retried, then dead-lettered.
The queue is FIFO with one message group per chat, so a chat's notices arrive in the order they were queued
(a progress edit never lands after the final result); each send gets its own deduplication id, because
dropping repeats is the notifier's job (by ``dedupe_key``, for a day), not the queue's five minutes.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import boto3

from depu.config import get_settings


@dataclass
class Notice:
    """One outgoing chat action. ``edit_message_id`` turns it into an in-place edit (progress messages);
    ``photo_key``/``document_key`` name S3 objects in the artifacts bucket to send as files;
    ``buttons`` is a list of rows of ``{"text": ..., "data": ...}`` or ``{"text": ..., "url": ...}``."""

    chat_id: int
    text: str
    buttons: list[list[dict[str, str]]] | None = None
    edit_message_id: int | None = None
    photo_key: str | None = None
    document_key: str | None = None
    filename: str | None = None
    dedupe_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, body: str) -> "Notice":
        return cls(**json.loads(body))


def enqueue(notice: Notice) -> None:
    """Queue a notice for delivery. ``dedupe_key`` lets the sender drop a repeat (at-least-once queues)."""
    boto3.client("sqs").send_message(
        QueueUrl=get_settings().notify_queue_url,
        MessageBody=notice.to_json(),
        MessageGroupId=message_group(notice.chat_id),
        MessageDeduplicationId=uuid.uuid4().hex,
    )


def message_group(chat_id: object) -> str:
    """The notify queue's message group of a chat: its notices are ordered among themselves only."""
    return str(chat_id)
