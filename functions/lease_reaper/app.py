"""Lease reaper (every minute): jobs whose agent went silent are retried on another agent or failed; offers
nobody claimed go back to the queue; jobs nobody took expire; unsettled ends are settled."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu.jobs import reaper

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[str]]:
    outcome = asdict(reaper.sweep())
    logger.info("lease sweep", extra={key: len(ids) for key, ids in outcome.items()})
    return outcome
