"""Payout worker: each queued payout is taken to ``confirmed`` (or ``failed``, re-credited); the schedule
advances any payout a crash or outage left midway. A payout still waiting for confirmations is given back to
the queue (a batch item failure) and comes back after the visibility timeout."""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.payouts.models import FINAL, unfinished
from depu.payouts.worker import Worker

logger = Logger()
tracer = tracing.tracer()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
WAIT_SECONDS = 40.0  # of the 60 s timeout: long enough for a few blocks, short of the visibility timeout


class NotYetFinal(Exception):
    """The payout waits for confirmations: SQS brings the message back later."""


@lru_cache(maxsize=1)
def _worker() -> Worker:
    return Worker()


def _record(outcome) -> None:  # noqa: ANN001
    metrics.add_metric(name="TreasuryLow", unit=MetricUnit.Count, value=1 if outcome.treasury_low else 0)
    logger.info("payout advanced", extra={"payout_id": outcome.payout_id, "state": outcome.state,
                                          "tx_hash": outcome.tx_hash})


def record_handler(record: SQSRecord) -> None:
    payout_id = str(json.loads(record.body)["payout_id"])
    outcome = _worker().run(payout_id, WAIT_SECONDS)
    _record(outcome)
    if outcome.state not in FINAL:
        raise NotYetFinal(outcome.state)


@metrics.log_metrics
@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "Records" in event:
        return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                        context=context)
    advanced = []
    for payout in unfinished():  # the schedule: resume what a crash or an outage left
        outcome = _worker().advance(payout.payout_id)
        _record(outcome)
        advanced.append(outcome.state)
    return {"advanced": len(advanced)}
