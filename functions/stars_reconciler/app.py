"""Stars reconciliation (hourly): Telegram's Star transactions against the ledger's charges. Each mismatch is
logged and counted in the ``StarsLedgerMismatches`` metric, whose alarm pages a person."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.payments.reconcile import reconcile
from depu.telegram.client import bot_api

logger = Logger()
tracer = tracing.tracer()
metrics = Metrics()


@metrics.log_metrics
@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = reconcile(bot_api())
    metrics.add_metric(name="StarsLedgerMismatches", unit=MetricUnit.Count, value=len(report.mismatches))
    for mismatch in report.mismatches:
        logger.error("stars ledger mismatch", extra={"mismatch": mismatch})
    return asdict(report)
