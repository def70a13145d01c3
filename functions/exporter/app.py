"""Exporter: turns one /export request from the export queue into a file in S3 and a chat notice.

A request that cannot be parsed is logged and dropped (retrying cannot fix it); a failure while building
is reported as a batch item failure, so SQS retries it and finally dead-letters it."""
from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.analytics import export_quota
from depu.analytics.export import ExportError, ExportRequest, build
from depu.notify import enqueue

logger = Logger()
tracer = tracing.tracer()
processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method(capture_response=False, capture_error=False)
def record_handler(record: SQSRecord) -> None:
    try:
        request = ExportRequest.from_json(record.body)
    except (ExportError, KeyError, TypeError, ValueError) as error:
        logger.error("unreadable export request dropped", extra={"message_id": record.message_id,
                                                                  "error": str(error)})
        return
    notice = build(request)
    enqueue(notice)
    export_quota.release(request.user_id, request.request_id)  # the user may start the next one
    logger.info("export delivered", extra={"request_id": request.request_id, "dataset": request.dataset,
                                           "format": request.format, "blocks": request.end - request.start + 1})


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
