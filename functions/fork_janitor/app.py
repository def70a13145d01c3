"""Fork janitor (every minute): warns before a fork expires, deletes expired forks, and rebuilds on another
host every fork whose host went silent (from its base and journal)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.forks import janitor

logger = Logger()
tracer = tracing.tracer()


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, list[str]]:
    outcome = asdict(janitor.sweep())
    logger.info("fork sweep", extra={key: len(ids) for key, ids in outcome.items()})
    return outcome
