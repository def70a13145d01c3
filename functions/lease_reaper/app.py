"""Lease reaper (every minute): jobs whose agent went silent are retried on another agent or failed; offers
nobody claimed go back to the queue; jobs nobody took expire; unsettled ends are settled."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.jobs import reaper

logger = Logger()
tracer = tracing.tracer()


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[str]]:
    outcome = asdict(reaper.sweep())
    logger.info("lease sweep", extra={key: len(ids) for key, ids in outcome.items()})
    return outcome
