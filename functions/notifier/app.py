"""Notifier: delivers queued ``Notice`` messages to Telegram, rate-limited, each at most once.

Repeats are dropped through the idempotency table, keyed by the notice's ``dedupe_key`` (or, without one,
by the SQS message id, which covers the queue's own at-least-once redelivery). A record that fails (Telegram
down, rate limited, unreadable notice) is reported as a batch item failure: SQS retries it and after the
queue's maxReceiveCount moves it to the dead-letter queue, where an alarm fires. Nothing is lost silently.

Per-chat order: NotifyQueue is FIFO with one message group per chat (depu.notify), so SQS hands a chat's
notices out in the order they were sent, and none of a group's later messages while earlier ones are in
flight. Powertools' SqsFifoPartialProcessor with ``skip_group_on_error`` keeps that within a batch: once a
chat's notice fails, the chat's later records in the batch are reported failed unsent, and they all come back
in order; other chats go on. What one invocation's records share (its time left, the seconds spent waiting
for slots) lives in an ``Invocation`` made per call, never in module state; only the rate limiter outlives an
invocation, on purpose.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.config import get_settings
from depu.notify import Notice
from depu.telegram.client import BotApi, TelegramError
from depu.telegram.delivery import RateLimiter, deliver

logger = Logger()
tracer = tracing.tracer()
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
processor.raise_on_entire_batch_failure = False  # all records failing is a normal answer: SQS retries them
limiter = RateLimiter()

MAX_WAIT_SECONDS = 5.0  # longer than this for one slot: give the record back to the queue
MAX_BATCH_WAIT_SECONDS = 8.0  # waiting for slots, all records of one invocation together
MIN_WAIT_SECONDS = 0.1  # even with the batch allowance spent, the global 1/30 s spacing is always fine
SAFETY_MARGIN_MS = 5000
DEDUPE_SECONDS = 24 * 3600

idempotency_config = IdempotencyConfig(event_key_jmespath="key", raise_on_no_idempotency_key=True,
                                       expires_after_seconds=DEDUPE_SECONDS)


@lru_cache(maxsize=1)
def _api() -> BotApi:
    # few, short retries: a long Telegram back-off is better spent by SQS than by this function
    return BotApi(max_attempts=2, max_sleep=2.0)


@lru_cache(maxsize=1)
def _s3() -> Any:
    import boto3

    return boto3.client("s3")


def fetch_artifact(key: str) -> bytes:
    return _s3().get_object(Bucket=get_settings().artifacts_bucket, Key=key)["Body"].read()


class Invocation:
    """One invocation's shared budget: its Lambda context (time left) and the seconds its records have
    waited for send slots so far. (A plain class: a handler module is loaded by path, outside sys.modules,
    where dataclasses cannot resolve its annotations.)"""

    def __init__(self, context: LambdaContext | None = None) -> None:
        self.context = context
        self.waited = 0.0

    def max_wait(self) -> float:
        """How long the next record may wait for its slot: bounded per record, per batch and by time left."""
        allowance = min(MAX_WAIT_SECONDS, max(MIN_WAIT_SECONDS, MAX_BATCH_WAIT_SECONDS - self.waited))
        if self.context is not None:
            allowance = min(allowance, (self.context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS) / 1000)
        return max(0.0, allowance)

    def handle(self, record: SQSRecord) -> dict[str, Any]:
        """Deliver one record's notice once (the processor skips it if its chat's earlier one failed)."""
        notice = Notice.from_json(record.body)  # an unreadable notice fails here and ends in the DLQ
        if not isinstance(notice.chat_id, int) or isinstance(notice.chat_id, bool) or not isinstance(notice.text, str):
            raise ValueError("a notice needs an integer chat_id and a text")
        key = f"dedupe:{notice.dedupe_key}" if notice.dedupe_key else f"sqs:{record.message_id}"
        result = _send_once()(delivery={"key": key, "body": record.body}, invocation=self)
        logger.info("notice delivered", extra={"chat_id": notice.chat_id, "message_id": result.get("message_id")})
        return result


def send(notice: Notice, invocation: Invocation) -> dict[str, Any]:
    """Wait for a send slot, then deliver; feeds Telegram's 429 back into the limiter."""
    invocation.waited += limiter.acquire(notice.chat_id, invocation.max_wait())
    try:
        message_id = deliver(notice, _api(), fetch_artifact)
    except TelegramError as exc:
        if exc.rate_limited:
            limiter.penalize(notice.chat_id, exc.retry_after or 1.0)
        raise
    return {"message_id": message_id}


@lru_cache(maxsize=1)
def _send_once():
    persistence = DynamoDBPersistenceLayer(table_name=get_settings().idempotency_table)

    @idempotent_function(data_keyword_argument="delivery", persistence_store=persistence,
                         config=idempotency_config, key_prefix="notice")
    def send_once(delivery: dict[str, Any], invocation: Invocation) -> dict[str, Any]:
        return send(Notice.from_json(delivery["body"]), invocation)

    return send_once


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency_config.register_lambda_context(context)
    invocation = Invocation(context)
    return process_partial_response(event=event, record_handler=invocation.handle, processor=processor, context=context)
