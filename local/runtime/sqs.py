"""Lambda's SQS event source mapping: long-poll the queue in moto, invoke with a batch, delete what succeeded.

Only what succeeded is deleted (all of a batch, none when the function failed, or those not in
``batchItemFailures`` with ``ReportBatchItemFailures``), so retries, visibility timeouts and dead-letter redrive
are moto's real behaviour.
"""
from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass
from typing import Any

from local.runtime.environments import LocalFunction
from local.template import REGION, LocalTemplate

log = logging.getLogger("local.runtime")

DELETE_ATTEMPTS = 60  # one a second: longer than any outage the fault tests inject


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping passes: one record per received message."""
    records = []
    for message in messages:
        attributes = dict(message.get("Attributes", {}))
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": attributes,
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": (base64.b64encode(value["BinaryValue"]).decode()
                                        if value.get("BinaryValue") else None),
                        "stringListValues": value.get("StringListValues", []),
                        "binaryListValues": value.get("BinaryListValues", []),
                        "dataType": value.get("DataType"),
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message.get("MD5OfBody"),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


@dataclass
class QueuePoller:
    """One event source mapping: a queue of the template feeding one function."""

    function: LocalFunction
    template: LocalTemplate
    aws_endpoint: str
    queue_id: str
    batch_size: int
    wait_seconds: int
    stop: threading.Event

    def run(self) -> None:
        from local.provision import client

        sqs = client("sqs", self.aws_endpoint)
        queue_url = self.template.queue_url(self.queue_id, self.aws_endpoint)
        queue_arn = self.template.arn(self.queue_id)
        partial = self.queue_id in self.function.spec.partial_batch_queues
        while not self.stop.is_set():
            try:
                received = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=max(1, min(self.batch_size, 10)),
                    WaitTimeSeconds=self.wait_seconds,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception as error:  # noqa: BLE001 - moto restarting or stopping: wait and retry
                if self.stop.is_set():
                    break
                log.warning("polling %s failed: %s", self.queue_id, error)
                self.stop.wait(1)
                continue
            if not received:
                continue
            succeeded = invoke_batch(self.function, sqs_event(received, queue_arn), partial)
            done = [m for m in received if m["MessageId"] in succeeded]
            for start in range(0, len(done), 10):
                self._delete(sqs, queue_url, done[start:start + 10])

    def _delete(self, sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
        """Delete handled messages, retrying while the endpoint is away (as Lambda's event source mapping
        does): a delete lost to an outage would hand an already handled message out again."""
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        for _attempt in range(DELETE_ATTEMPTS):
            try:
                sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
                return
            except Exception as error:  # noqa: BLE001 - the endpoint is away: try again shortly
                log.warning("deleting handled messages from %s failed: %s", self.queue_id, error)
                if self.stop.wait(1):
                    return
        log.error("gave up deleting %d handled messages from %s: they will be offered again", len(entries),
                  self.queue_id)


def invoke_batch(function: LocalFunction, event: dict[str, Any], partial: bool) -> set[str]:
    """Message ids to delete: all of them, none (the function failed) or those not in batchItemFailures."""
    ids = {record["messageId"] for record in event["Records"]}
    try:
        result = function.invoke(event)
    except Exception:  # noqa: BLE001 - the whole batch goes back to the queue, like Lambda
        return set()
    if not partial or not isinstance(result, dict) or not result.get("batchItemFailures"):
        return ids
    failed = {item.get("itemIdentifier") for item in result["batchItemFailures"] if isinstance(item, dict)}
    if len(failed) != len(result["batchItemFailures"]) or not failed <= ids:
        log.error("%s returned invalid batchItemFailures; the whole batch is retried", function.name)
        return set()
    return ids - failed
