"""Abuse: an /export flood (issue 11, item 10). Through the real webhook and the real exporter: one user's
exports run one at a time and at most ``MAX_PER_HOUR`` start per hour; the rest get a clear chat message and
put nothing on the queue. Racing requests cannot both take the slot (a conditional write decides), a slot
left by a dead export lapses, and the exporter has reserved concurrency that SQS never invokes beyond.
"""
from __future__ import annotations

import json
import threading
import time

import boto3
import pytest

from proof_support import invoke, message, webhook, webhook_event  # noqa: F401 - fixtures
from rental_helpers import USER_ID, ensure_user
from telegram_harness import FakeLambdaContext, load_function, sqs_event

from depu.analytics import export_quota


def queued() -> list[dict]:
    """Take every message off the export queue."""
    from depu.config import get_settings

    sqs, bodies = boto3.client("sqs"), []
    while True:
        batch = sqs.receive_message(QueueUrl=get_settings().export_queue_url, MaxNumberOfMessages=10,
                                    WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return bodies
        for item in batch:
            bodies.append(json.loads(item["Body"]))
            sqs.delete_message(QueueUrl=get_settings().export_queue_url, ReceiptHandle=item["ReceiptHandle"])


class Sender:
    def __init__(self, webhook, telegram) -> None:
        self.webhook, self.telegram, self.update_id = webhook, telegram, 90_000

    def export(self, user_id: int = USER_ID) -> str:
        """Send ``/export`` as ``user_id``; returns the bot's reply."""
        self.update_id += 1
        before = len(self.telegram.calls_of("sendMessage"))
        status, _ = invoke(self.webhook, webhook_event(json.dumps(message(self.update_id, user_id,
                                                                          "/export transfers 1-5 csv"))))
        assert status == 200
        sent = self.telegram.calls_of("sendMessage")[before:]
        assert len(sent) == 1, sent
        return sent[0].params["text"]


def run_exporter(requests: list[dict]) -> None:
    exporter = load_function("exporter")
    for request in requests:
        assert exporter.lambda_handler(sqs_event([json.dumps(request)]), FakeLambdaContext()) == {"batchItemFailures": []}


def test_an_export_flood_gets_one_running_and_the_rest_refused_with_a_clear_message(webhook, telegram):
    ensure_user(USER_ID)
    ensure_user(USER_ID + 1)
    send = Sender(webhook, telegram)
    replies = [send.export() for _ in range(15)]
    assert "Preparing transfers" in replies[0]
    assert all("previous export is still being prepared" in reply for reply in replies[1:]), replies[1:3]
    waiting = queued()
    assert len(waiting) == 1  # fourteen refusals queued nothing
    assert "Preparing" in send.export(USER_ID + 1)  # another user is not held up
    other = queued()
    run_exporter(waiting + other)  # delivered: the slot is free again
    assert "Preparing" in send.export()
    run_exporter(queued())


def test_the_hourly_limit_refuses_after_max_per_hour_and_opens_again_next_hour(webhook, telegram, monkeypatch):
    ensure_user(USER_ID)
    send = Sender(webhook, telegram)
    clock = [3_600_000 + 60.0]  # one minute into an hour
    monkeypatch.setattr(export_quota.time, "time", lambda: clock[0])
    for _ in range(export_quota.MAX_PER_HOUR):
        assert "Preparing" in send.export()
        run_exporter(queued())
    refusal = send.export()
    assert f"started {export_quota.MAX_PER_HOUR} exports this hour" in refusal and "Try again in 59 min" in refusal
    assert queued() == []
    clock[0] += 3600
    assert "Preparing" in send.export()
    assert len(queued()) == 1


def test_racing_exports_cannot_both_take_the_slot(aws):
    """Eight concurrent /export commands of one user: the conditional write lets exactly one through."""
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            export_quota.acquire(USER_ID, f"req{index}")
            outcomes.append("ok")
        except export_quota.ExportLimited:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7


def test_only_the_holder_frees_the_slot_and_a_dead_exports_slot_lapses(aws):
    now = 7_200_000
    export_quota.acquire(USER_ID, "first", now=now)
    export_quota.release(USER_ID, "someone-else")  # an old redelivery must not free a newer export's slot
    with pytest.raises(export_quota.ExportLimited, match="still being prepared"):
        export_quota.acquire(USER_ID, "second", now=now + 60)
    # the exporter never came back (every retry failed): after the queue's retry window the slot lapses
    export_quota.acquire(USER_ID, "third", now=now + export_quota.RUNNING_LEASE_SECONDS + 1)
    export_quota.release(USER_ID, "third")
    export_quota.acquire(USER_ID, "fourth", now=now + export_quota.RUNNING_LEASE_SECONDS + 2)


def test_the_exporter_has_reserved_concurrency_that_its_queue_never_exceeds():
    from local.template import LocalTemplate

    exporter = LocalTemplate().raw["Resources"]["ExporterFunction"]["Properties"]
    reserved = int(exporter["ReservedConcurrentExecutions"])
    assert 1 <= reserved <= 5
    maximum = int(exporter["Events"]["Exports"]["Properties"]["ScalingConfig"]["MaximumConcurrency"])
    assert 2 <= maximum <= reserved  # SQS's minimum is 2; above the reservation, receives would be throttled


def test_a_long_export_shares_the_exporter_run_by_run_instead_of_holding_it(aws, monkeypatch):
    """A user's export of a long range hands over after each run and its continuation queues behind the
    others: another user's export, queued while it runs, is delivered long before it ends. The long export
    keeps its owner's slot across runs (renewed at each hand-over), so they still cannot start a second."""
    from depu.analytics import export, export_checkpoint, raw
    from depu.config import get_settings

    monkeypatch.setenv("EXPORT_RUN_SECONDS", "0")  # every run: one raw part, then hand over
    get_settings.cache_clear()
    for start in range(0, 12_000, 1_000):
        raw.write_part("transfers", start, start + 999, [{
            "block_number": start + 1, "block_hash": "0x1", "block_timestamp": 1, "tx_hash": f"0x{start:064x}",
            "tx_index": 0, "log_index": 0, "asset": "0x" + "ab" * 20, "kind": "erc20", "shape": "standard",
            "sender": "0x" + "01" * 20, "recipient": "0x" + "02" * 20, "amount": "1", "token_id": None}])
    long = export.ExportRequest("long0001", USER_ID, USER_ID, "transfers", 0, 11_999, "csv")
    short = export.ExportRequest("short001", USER_ID + 1, USER_ID + 1, "transfers", 0, 999, "csv")
    export_quota.acquire(USER_ID, long.request_id, now=time.time() - export_quota.RUNNING_LEASE_SECONDS + 5)
    export_quota.acquire(USER_ID + 1, short.request_id)
    export.enqueue(long)
    sqs, url = boto3.client("sqs"), get_settings().export_queue_url
    delivered: list[str] = []
    for turn in range(40):  # one message at a time, in queue order
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            break
        run_exporter([json.loads(batch[0]["Body"])])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=batch[0]["ReceiptHandle"])
        if turn == 0:
            export.enqueue(short)  # while the long one is under way
        if turn == 5:  # the first acquisition would have lapsed 5 s from the start; hand-overs renewed it
            with pytest.raises(export_quota.ExportLimited, match="still being prepared"):
                export_quota.acquire(USER_ID, "second", now=time.time() + 10)
        for request in (long, short):
            record = export_checkpoint.read(request.request_id)
            if record and record.state == export_checkpoint.DELIVERED and request.request_id not in delivered:
                delivered.append(request.request_id)
    get_settings.cache_clear()
    assert delivered == [short.request_id, long.request_id]
    assert export_checkpoint.read(long.request_id).runs == 13
    export_quota.acquire(USER_ID, "next")  # delivered: free again
