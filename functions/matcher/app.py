"""Matcher: gives each queued job on JobQueue to the agent that fits it best (depu.agents.matcher).

A job nobody can take yet is reported as a batch item failure after its message's visibility is set to a
backoff, so SQS offers it again later; a job that is no longer queued (claimed by an idle agent, cancelled,
expired) is simply done.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from depu import tracing
from depu.agents import matcher
from depu.config import get_settings
from depu.jobs import lifecycle, messages
from depu.jobs.leases import match_backoff
from depu.jobs.models import Job

logger = Logger()
tracer = tracing.tracer()
# nobody-fits-yet is routine, not an error: report the items, never fail the whole invocation
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class NoAgentYet(Exception):
    """No online, verified agent of the job's class has a free GPU right now."""


@lru_cache(maxsize=1)
def _sqs() -> Any:
    return boto3.client("sqs")


def _back_off(record: SQSRecord) -> None:
    receives = int(record.attributes.approximate_receive_count or 1)
    _sqs().change_message_visibility(
        QueueUrl=get_settings().job_queue_url,
        ReceiptHandle=record.receipt_handle,
        VisibilityTimeout=match_backoff(receives),
    )


def record_handler(record: SQSRecord) -> None:
    job_id = json.loads(record.body)["job_id"]
    try:
        job = Job.get(job_id, consistent_read=True)
    except Job.DoesNotExist:
        logger.warning("queued job not found", extra={"job_id": job_id})
        return
    if job.status != lifecycle.QUEUED:
        return
    agent = matcher.match(job)
    if agent is None:
        job.refresh(consistent_read=True)
        if job.status != lifecycle.QUEUED:
            return
        _back_off(record)
        raise NoAgentYet(job_id)
    logger.info("assigned", extra={"job_id": job_id, "agent_id": agent.agent_id, "gpu_class": job.gpu_class})
    messages.maybe_update_progress(job, force=True)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
