"""Indexer (every minute, 90 s each): follows the chain head until about 10 s before its timeout, or until
the next run, already started, asks for the follower lease: the chain is followed without a gap.

Everything it writes is keyed by block, transaction and log position and its checkpoint moves only after a
chunk is complete, so a timeout or crash at any point is finished by the next run with nothing lost and
nothing visible twice (see ``depu.chain.indexer``)."""
from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.chain.indexer import Indexer, IndexerConfig
from depu.chain.lease import FollowerLease
from depu.config import get_settings

logger = Logger()
tracer = tracing.tracer()

SAFETY_MARGIN_MS = 10_000


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    budget_s = max(0.0, (context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS) / 1000)
    indexer = Indexer(get_settings().chain_rpc_url, IndexerConfig.from_env())
    report = indexer.run(deadline=time.monotonic() + budget_s, lease=FollowerLease(context.aws_request_id))
    outcome = {name: getattr(report, name) for name in (
        "blocks", "transfers", "reorgs", "reverted_blocks", "alerts", "checkpoint", "seconds", "tip_blocks",
        "tip_reorgs", "following_since", "followed_until", "handed_over")}
    outcome["shapes"] = dict(report.shapes)
    logger.info("indexer run", extra=outcome)
    return outcome
