"""Exporter: one run of one export from the export queue (``depu.analytics.export_run``).

The handler turns Lambda's remaining time into a deadline for the domain (less the hand-over margin), so a
long export checkpoints and queues its continuation on this same queue before the timeout. A request that
cannot be parsed is logged and dropped (retrying cannot fix it); a failure while building or composing is
a batch item failure, so SQS retries it from the last checkpoint. On the last receive the user is told the export failed,
their export slot is freed, and the message goes on to the dead-letter queue."""
from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.analytics import export_run
from depu.analytics.export import ExportError, ExportRequest, hop_of
from depu.config import get_settings

logger = Logger()
tracer = tracing.tracer()
# a failed run is reported as the batch's item failure, not raised (the batch is one message anyway)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _run_budget(remaining: float, cap: float | None) -> float:
    """Seconds this run may work in: the time left less the hand-over margin (at most a tenth of it, so a
    short test timeout still leaves work time), capped by ``cap`` when set (``EXPORT_RUN_SECONDS`` for
    building, ``EXPORT_COMPOSE_SECONDS`` for composing)."""
    budget = remaining - min(get_settings().export_handover_margin_seconds, remaining / 10)
    if cap is not None:
        budget = min(budget, cap)
    return max(0.0, budget)


@tracer.capture_method(capture_response=False, capture_error=False)
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    try:
        request, hop = ExportRequest.from_json(record.body), hop_of(record.body)
    except (ExportError, KeyError, TypeError, ValueError) as error:
        logger.error("unreadable export request dropped", extra={"message_id": record.message_id,
                                                                  "error": str(error)})
        return
    remaining = lambda_context.get_remaining_time_in_millis() / 1000
    settings, started = get_settings(), time.monotonic()
    budget = _run_budget(remaining, settings.export_run_seconds)
    seconds = settings.export_progress_seconds
    throttle = {} if seconds is None else {"progress_seconds": seconds}
    try:
        outcome = export_run.run(request, hop, deadline=started + budget,
                                 compose_seconds=export_run.compose_reserve(request.format, budget),
                                 compose_deadline=started + _run_budget(remaining, settings.export_compose_seconds),
                                 **throttle)
    except Exception:
        receives = int(record.attributes.approximate_receive_count or 1)
        if receives >= export_run.MAX_RECEIVES:
            export_run.give_up(request)
            logger.exception("export failed for good", extra={"request_id": request.request_id, "hop": hop})
        raise
    logger.info("export run", extra={"request_id": request.request_id, "hop": hop, "outcome": outcome.kind,
                                     "dataset": request.dataset, "format": request.format,
                                     "blocks": request.end - request.start + 1})


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
